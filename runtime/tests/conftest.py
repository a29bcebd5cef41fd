"""Tiny real models and adapters for the runtime tests (built once per session, no downloads)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from saigon_runtime.testing.tiny import install_adapter, make_adapter, make_gpt2, make_llama

AdapterFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_llama(tmp_path_factory.mktemp("llama") / "base")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_gpt2(tmp_path_factory.mktemp("gpt2") / "base")


@pytest.fixture(scope="session")
def adapter_factory(tmp_path_factory: pytest.TempPathFactory) -> AdapterFactory:
    """make(base_dir, **make_adapter kwargs) -> a PEFT adapter directory (cached by arguments)."""
    root = tmp_path_factory.mktemp("adapters-src")
    made: dict[str, Path] = {}

    def make(base_dir: Path, **kwargs: object) -> Path:
        key = f"{base_dir}|{sorted(kwargs.items())}"
        if key not in made:
            made[key] = make_adapter(base_dir, root / f"a{len(made)}", **kwargs)  # type: ignore[arg-type]
        return made[key]

    return make


@pytest.fixture
def adapters_dir(tmp_path: Path) -> Path:
    path = tmp_path / "adapters"
    path.mkdir()
    return path


@pytest.fixture
def install() -> Callable[[Path, str, str, Path], Path]:
    return install_adapter
