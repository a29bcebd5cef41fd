"""The two images' Dockerfiles: hadolint-clean, non-root, and in agreement with the code that
runs in them (uid, mount paths, port, environment names). No Docker engine is needed: the
dependency set an image installs is read from uv.lock, exactly as `uv export` in it does."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from saigon_contract import resources as r
from saigon_operator.builders.model import RUNTIME_UID
from saigon_runtime.config import DEFAULT_PORT, ENV_VARS

REPO = Path(__file__).resolve().parents[1]
HADOLINT = Path(sys.executable).parent / "hadolint"
TORCH_STACK = {"torch", "transformers", "peft", "safetensors", "tokenizers", "numpy"}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def resolve(self, image: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: self.args[m.group(1)], image)


def parse(path: Path) -> Dockerfile:
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = rest.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) == 3 else None))
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return Dockerfile(args, stages)


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in stage.all("ENV"):
        for item in shlex.split(rest):
            name, _, value = item.partition("=")
            env[name] = value
    return env


def lock_closure(package: str) -> set[str]:
    """Every package uv.lock installs for `package` (no dev groups, no extras)."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    by_name = {p["name"]: p for p in lock["package"]}
    seen: set[str] = set()
    todo = [package]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [dep["name"] for dep in by_name[name].get("dependencies", [])]
    return seen - {package}


@pytest.mark.parametrize("name", ["Dockerfile.operator", "Dockerfile.runtime"])
def test_hadolint_is_clean(name: str) -> None:
    result = subprocess.run([str(HADOLINT), "--no-color", str(REPO / name)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\n")
    result = subprocess.run([str(HADOLINT), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3008" in result.stdout


def test_operator_image_is_slim_python_with_only_the_operator_package() -> None:
    dockerfile = parse(REPO / "Dockerfile.operator")
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", dockerfile.resolve(dockerfile.final.base))
    build = "\n".join(rest for stage in dockerfile.stages for _, rest in stage.instructions)
    assert "--package saigon-operator" in build and "--require-hashes" in build
    copies = [rest for stage in dockerfile.stages for rest in stage.all("COPY")]
    # The runtime package never enters this image; only its pyproject (uv reads the workspace).
    assert [c for c in copies if "runtime" in c] == ["runtime/pyproject.toml runtime/pyproject.toml"]
    closure = lock_closure("saigon-operator")
    assert {"kopf", "kubernetes", "aiohttp"} <= closure
    assert not closure & TORCH_STACK, closure & TORCH_STACK


def test_operator_image_runs_as_a_numeric_non_root_user_on_the_charts_port() -> None:
    final = parse(REPO / "Dockerfile.operator").final
    (user,) = final.all("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    values = yaml.safe_load((REPO / "charts" / "saigon" / "values.yaml").read_text())
    assert final.all("EXPOSE") == [str(values["operator"]["port"])]
    assert values["operator"]["podSecurityContext"]["runAsUser"] == int(uid)
    assert json.loads(final.all("ENTRYPOINT")[0]) == ["saigon-operator"]


def test_runtime_image_is_cuda_based_non_root_with_model_and_adapter_volumes() -> None:
    dockerfile = parse(REPO / "Dockerfile.runtime")
    final = dockerfile.final
    assert dockerfile.resolve(final.base).startswith("nvidia/cuda:")
    (user,) = final.all("USER")
    # The operator's pod template runs the runtime as this uid; the image must own its dirs for it.
    assert user == f"{RUNTIME_UID}:{RUNTIME_UID}"
    (volumes,) = final.all("VOLUME")
    assert set(json.loads(volumes)) == {r.BASE_MODEL_MOUNT, r.ADAPTERS_MOUNT}
    env = env_of(final)
    assert env["SAIGON_ADAPTERS_DIR"] == r.ADAPTERS_MOUNT and env["SAIGON_BASE_MODEL"] == r.BASE_MODEL_MOUNT
    assert {name for name in env if name.startswith("SAIGON_")} <= set(ENV_VARS)
    assert final.all("EXPOSE") == [str(DEFAULT_PORT)]
    assert json.loads(final.all("ENTRYPOINT")[0]) == ["saigon-runtime"]
    build = "\n".join(rest for stage in dockerfile.stages for _, rest in stage.instructions)
    assert "--package saigon-runtime" in build and "python install 3.11." in build
    closure = lock_closure("saigon-runtime")
    assert "torch" in closure and "saigon-contract" in closure
    # The demo, benchmark and test helpers' dependencies stay in the `demo` extra.
    assert "peft" not in closure and "kubernetes" not in closure


def test_dockerignore_sends_only_the_packages_and_the_lock() -> None:
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        part.rstrip("/")
        for name in ("Dockerfile.operator", "Dockerfile.runtime")
        for stage in parse(REPO / name).stages
        for rest in stage.all("COPY")
        if not rest.startswith("--from")
        for part in rest.split()[:-1]
    }
    # Every path a COPY names is sent (the packages' sources through their package folders).
    for path in copied:
        assert path in allowed or any(a.startswith(path + "/") for a in allowed), path
    assert not [a for a in allowed if "tests" in a]
