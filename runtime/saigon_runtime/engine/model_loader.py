"""Loading the base model and tokenizer from a local directory (safetensors only)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


class BaseModelError(RuntimeError):
    pass


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype
    model_id: str
    fallback_reason: str | None = None


def pick_device(requested: str) -> torch.device:
    """`auto` is CUDA when a device is visible, else the CPU; `cpu` and `cuda[:N]` are exactly that."""
    if requested in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise BaseModelError(f"device {requested!r} requested but CUDA is not available")
    try:
        return torch.device(requested)
    except RuntimeError:
        raise BaseModelError(f"unknown device {requested!r} (use auto, cpu or cuda[:N])") from None


def pick_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    if requested not in ("", "auto"):
        try:
            dtype = getattr(torch, requested)
        except AttributeError:
            raise BaseModelError(f"unknown dtype {requested!r}") from None
        if not isinstance(dtype, torch.dtype):
            raise BaseModelError(f"unknown dtype {requested!r}")
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _check_dir(path: Path) -> None:
    if not path.is_dir():
        raise BaseModelError(f"base model directory {path} does not exist")
    if not any(path.glob("*.safetensors")):
        found = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        hint = f" (found pickle files {found}; convert them to safetensors)" if found else ""
        raise BaseModelError(f"no .safetensors weights in {path}{hint}")


def load_base_model(
    path: Path, device: str = "auto", dtype: str = "auto", *, cpu_fallback: bool = False
) -> LoadedModel:
    """Load once. A failure on an accelerator (out of memory included) is an error that keeps the
    runtime not Ready; only with `cpu_fallback` does it load on the CPU instead, saying why."""
    _check_dir(path)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    target = pick_device(device)
    fallback: str | None = None
    try:
        model = _load(path, target, pick_dtype(target, dtype))
    except Exception as exc:
        if target.type == "cpu":
            raise
        failure = f"loading the base model on {target} failed ({type(exc).__name__}: {exc})"
        if not cpu_fallback:
            raise BaseModelError(f"{failure}; set SAIGON_CPU_FALLBACK=true to serve from the CPU instead") from exc
        fallback = f"{failure}; serving from the CPU (SAIGON_CPU_FALLBACK)"
        log.warning(fallback)
        _free_accelerator(target)
        target = torch.device("cpu")
        model = _load(path, target, torch.float32)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    return LoadedModel(model, tokenizer, target, next(model.parameters()).dtype, path.name, fallback)


def _free_accelerator(device: torch.device) -> None:
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _load(path: Path, device: torch.device, dtype: torch.dtype) -> PreTrainedModel:
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, use_safetensors=True, local_files_only=True, trust_remote_code=False
    )
    model.to(device)  # type: ignore[arg-type]  # transformers types .to() through a decorator
    return model.eval()
