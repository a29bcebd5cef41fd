"""Reading a PEFT LoRA directory safely and checking it against the base model.

Only `adapter_config.json` + `adapter_model.safetensors` are read. Pickle files are never
opened here; `import_legacy` (see legacy.py) is the explicit way to convert one.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from saigon_runtime.adapters.peft_config import MAX_CONFIG_BYTES, ConfigRejected, LoraConfigFile, parse_config
from saigon_runtime.adapters.types import ModuleShape, is_expert_module
from saigon_runtime.errors import AdapterRejected

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_FILES = ("adapter_model.bin", "adapter_model.pt", "pytorch_model.bin")
MAX_WEIGHTS_BYTES = 2 * 1024**3
_PEFT_PREFIX = "base_model.model."

# Options whose values we understand. Anything else must be unset (None, False, empty):
# a set value means a LoRA variant (DoRA, QALoRA, trainable tokens...) that we do not serve.
_UNDERSTOOD_OPTIONS = {
    "target_modules", "exclude_modules", "fan_in_fan_out", "base_model_name_or_path", "revision", "task_type",
    "peft_type", "peft_version", "inference_mode", "init_lora_weights", "lora_dropout", "bias",
    "layers_to_transform", "layers_pattern", "auto_mapping", "megatron_core", "qalora_group_size",
    "ensure_weight_tying", "corda_config", "eva_config", "lora_ga_config",
}  # fmt: skip


@dataclass
class HostAdapter:
    """A validated adapter in host memory, ready to be copied into a device slot.

    For each module: `a` is [in, r] (lora_A transposed) and `b` is [r, out] with the
    LoRA scaling already folded in, so the layer computes x @ a @ b.
    """

    name: str
    version: str
    path: Path
    digest: str
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]
    max_rank: int
    config: LoraConfigFile | None = field(repr=False, default=None)

    @property
    def nbytes(self) -> int:
        return sum(a.numel() * a.element_size() + b.numel() * b.element_size() for a, b in self.modules.values())


def _reject(name: str, message: str) -> AdapterRejected:
    return AdapterRejected(f"adapter {name!r} refused: {message}")


def read_config(path: Path, name: str = "?") -> LoraConfigFile:
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise _reject(name, f"{CONFIG_FILE} is missing in {path.name}")
    if cfg_path.stat().st_size > MAX_CONFIG_BYTES:
        raise _reject(name, f"{CONFIG_FILE} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = parse_config(cfg_path.read_bytes())
    except ConfigRejected as exc:
        raise _reject(name, f"{CONFIG_FILE}: {exc}") from None
    if config.peft_type != "LORA":
        raise _reject(name, f"peft_type {config.peft_type!r} is not supported (only LORA)")
    if config.use_dora:
        raise _reject(name, "DoRA adapters (use_dora=true) are not supported")
    if config.bias != "none":
        raise _reject(name, f"bias={config.bias!r} is not supported (only 'none')")
    extra = config.extra_options()
    if extra.get("loftq_config"):
        raise _reject(name, "LoftQ adapters change the base weights and are not supported")
    if extra.get("modules_to_save"):
        raise _reject(
            name,
            f"modules_to_save={_preview(extra['modules_to_save'])} (fully trained copies of base modules) "
            "is not supported",
        )
    if extra.get("target_parameters"):
        raise _reject(
            name,
            f"target_parameters={_preview(extra['target_parameters'])}: LoRA on raw parameters (mixture-of-experts "
            "expert or router weights) is not supported; target the attention and dense layers only",
        )
    for key, value in extra.items():
        if key not in _UNDERSTOOD_OPTIONS and value not in (None, False, {}, [], ""):
            raise _reject(name, f"unsupported LoRA option {key}={_preview(value)}")
    return config


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_adapter(
    path: Path,
    *,
    name: str,
    version: str,
    shapes: dict[str, ModuleShape],
    max_rank: int,
    dtype: torch.dtype = torch.float32,
) -> HostAdapter:
    """Read and check one adapter directory; raise AdapterRejected with the precise reason."""
    if not path.is_dir():
        raise _reject(name, f"{path.name} is not a directory")
    weights = path / WEIGHTS_FILE
    for file in (path / CONFIG_FILE, weights):
        if file.is_symlink():
            # Adapter files are written in place (agent, import); a link could point anywhere.
            raise _reject(name, f"{file.name} is a symbolic link; adapter files must be regular files")
    if not weights.is_file():
        pickles = [p for p in PICKLE_FILES if (path / p).exists()]
        if pickles:
            raise _reject(
                name,
                f"{pickles[0]} is a pickle file and is never loaded; convert it with "
                "`saigon-runtime import-legacy` into safetensors",
            )
        raise _reject(name, f"{WEIGHTS_FILE} is missing")
    if weights.stat().st_size > MAX_WEIGHTS_BYTES:
        raise _reject(name, f"{WEIGHTS_FILE} is larger than {MAX_WEIGHTS_BYTES} bytes")
    config = read_config(path, name)
    alpha_patterns = config.alpha_patterns()
    rank_patterns = config.rank_patterns()

    try:
        tensors = _read_safetensors(weights)
    except Exception as exc:  # safetensors raises several types for a corrupt header
        raise _reject(name, f"{WEIGHTS_FILE} is not a valid safetensors file ({exc})") from None

    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        module, part = _split_key(key, name)
        pairs.setdefault(module, {})[part] = tensor
    if not pairs:
        raise _reject(name, "it holds no LoRA weights")

    modules: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    top_rank = 0
    for module, parts in sorted(pairs.items()):
        if set(parts) != {"A", "B"}:
            raise _reject(name, f"module {module} lacks lora_{'A' if 'A' not in parts else 'B'}")
        shape = shapes.get(module)
        if shape is None and is_expert_module(module):
            raise _reject(name, f"module {module}: expert LoRA (mixture-of-experts experts) is not supported")
        if shape is None:
            raise _reject(name, f"module {module} is not a LoRA target of this base model")
        a, b = parts["A"], parts["B"]
        if a.dim() != 2 or b.dim() != 2:
            raise _reject(name, f"module {module}: lora_A/lora_B must be matrices")
        rank = a.shape[0]
        if a.shape[1] != shape.in_features or b.shape != (shape.out_features, rank):
            raise _reject(
                name,
                f"module {module}: shapes A{tuple(a.shape)} B{tuple(b.shape)} do not fit the base "
                f"layer ({shape.in_features} -> {shape.out_features}) at rank {rank}",
            )
        if rank < 1 or rank > max_rank:
            raise _reject(name, f"module {module}: rank {rank} is above the maximum {max_rank}")
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise _reject(name, f"module {module} holds NaN or infinite values")
        declared = int(rank_patterns.value_for(module, config.r))
        if rank != declared:
            raise _reject(name, f"module {module}: its weights have rank {rank}, its config says r={declared}")
        mod_alpha = alpha_patterns.value_for(module, config.lora_alpha)
        scaling = mod_alpha / math.sqrt(rank) if config.use_rslora else mod_alpha / rank
        a_t = a.to(torch.float32).t().contiguous().to(dtype)
        b_t = (b.to(torch.float32).t() * scaling).contiguous().to(dtype)
        modules[module] = (a_t, b_t)
        top_rank = max(top_rank, rank)
    return HostAdapter(
        name=name,
        version=version,
        path=path,
        digest=file_digest(weights),
        modules=modules,
        max_rank=top_rank,
        config=config,
    )


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            out[key] = f.get_tensor(key)
    return out


def _split_key(key: str, name: str) -> tuple[str, str]:
    stem = key.removeprefix(_PEFT_PREFIX)
    if ".lora_embedding_" in stem:
        raise _reject(name, f"tensor {key!r}: embedding LoRA is not supported")
    if ".modules_to_save." in stem:
        raise _reject(name, f"tensor {key!r}: modules_to_save (fully trained module copies) is not supported")
    if ".lora_magnitude_vector" in stem:
        raise _reject(name, f"tensor {key!r}: DoRA magnitude vectors are not supported")
    for part in ("A", "B"):
        for suffix in (f".lora_{part}.weight", f".lora_{part}.default.weight"):
            if stem.endswith(suffix):
                return stem[: -len(suffix)], part
    raise _reject(name, f"tensor {key!r} is not a LoRA A/B weight (embedding LoRA, bias or extra modules)")
