#!/usr/bin/env bash
# Builds the Go linters the checks use (actionlint for .github/workflows, helm-docs for the
# chart's values table) from the Go module proxy into a cache outside the clone, keyed by
# version. A second run is a no-op. Prints the directory that holds the binaries.
# With --print-bin-dir it only prints that directory, built or not.
set -euo pipefail

ACTIONLINT_VERSION="v1.7.12"
HELM_DOCS_VERSION="v1.14.2"
CACHE_ROOT="${SAIGON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/saigon}"
OUT="$CACHE_ROOT/go-tools/actionlint-${ACTIONLINT_VERSION}_helm-docs-${HELM_DOCS_VERSION}"

built() { [[ -f "$OUT/VERSIONS" && -x "$OUT/bin/actionlint" && -x "$OUT/bin/helm-docs" ]]; }
# shellcheck source=scripts/lib/cached-build.sh
source "$(dirname "$0")/lib/cached-build.sh"
cached_build_begin "$OUT" built "$@"
command -v go >/dev/null || { echo "go is required to build actionlint and helm-docs" >&2; exit 1; }
export CGO_ENABLED=0 GOTOOLCHAIN=local
echo ">> building actionlint $ACTIONLINT_VERSION and helm-docs $HELM_DOCS_VERSION" >&2
GOBIN="$OUT/bin" go install -trimpath -ldflags "-s -w" "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
GOBIN="$OUT/bin" go install -trimpath -ldflags "-s -w" "github.com/norwoodj/helm-docs/cmd/helm-docs@$HELM_DOCS_VERSION"
printf 'actionlint=%s\nhelm-docs=%s\n' "$ACTIONLINT_VERSION" "$HELM_DOCS_VERSION" > "$OUT/VERSIONS"
echo "$OUT/bin"
