"""Tiny real models and PEFT adapters for the operator's end-to-end tests, packed as artifacts."""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from saigon_runtime.testing.tiny import LLAMA_TARGETS, make_llama
from transformers import LlamaForCausalLM

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
    make_lora(base, out, rank=rank, seed=seed)
    return Artifact(out, pack(out))


def make_lora(base: Path, out: Path, *, rank: int, seed: int) -> Path:
    """A PEFT LoRA on all seven LLaMA projections with random non-zero weights, in PEFT's format.

    (saigon_runtime.testing.tiny.make_adapter would do, but it currently drops `target_modules`.)
    """
    model = LlamaForCausalLM.from_pretrained(base, use_safetensors=True, local_files_only=True)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(LLAMA_TARGETS), init_lora_weights=False)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn_like(param) * 0.05)
    peft_model.save_pretrained(str(out))
    return out


def pack(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ADAPTER_FILES:
            tar.add(directory / name, arcname=name)
    return buffer.getvalue()
