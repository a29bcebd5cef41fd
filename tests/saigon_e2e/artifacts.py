"""Tiny real models and PEFT adapters for the operator's end-to-end tests, packed as artifacts."""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from saigon_runtime.testing.tiny import make_adapter, make_llama

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class Artifact:
    directory: Path
    data: bytes  # the tar archive

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)


def make_base(path: Path) -> Path:
    """A random LLaMA-shaped model whose rank-80 LoRA on all projections is about 5 MB."""
    return make_llama(path, hidden=256, layers=4, intermediate=512, heads=4, kv_heads=2)


def make_artifact(base: Path, out: Path, *, seed: int, rank: int = 4) -> Artifact:
    make_adapter(base, out, rank=rank, seed=seed)
    return Artifact(out, pack(out))


def pack(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ADAPTER_FILES:
            tar.add(directory / name, arcname=name)
    return buffer.getvalue()
