# The two commands the README opens with: `make demo` and `make test`.
.PHONY: demo test lint typecheck env sysdeps controlplane tools chart-docs bench

PY := .venv/bin/python

env:
	@scripts/env.sh

demo: env
	$(PY) -m saigon_runtime.demo.main serve

sysdeps:
	@scripts/system-deps.sh

# The main control plane, and the kube-apiserver of the oldest supported release (the floor test).
controlplane:
	@tests/controlplane/build.sh >/dev/null
	@tests/controlplane/build-floor.sh >/dev/null

tools:
	@scripts/go-tools.sh >/dev/null

# Regenerates charts/saigon/README.md (its values table) from values.yaml.
chart-docs: tools
	"$$(scripts/go-tools.sh --print-bin-dir)/helm-docs" -c charts -s file --skip-version-footer

lint: env
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: env
	.venv/bin/mypy

test: env sysdeps controlplane tools lint typecheck
	$(PY) -m pytest

bench: env
	$(PY) -m saigon_runtime.bench.engine
