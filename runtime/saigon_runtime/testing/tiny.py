"""Tiny but real transformers models, tokenizers and PEFT LoRA adapters, made locally.

Tests, benchmarks and the operator's end-to-end tests all build their models here, so
nothing is ever fetched from a model hub.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from saigon_contract.names import ACTIVE_LINK
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)
from transformers.pytorch_utils import Conv1D

LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GPT2_TARGETS = ("c_attn", "c_proj", "c_fc")
_WORDS = (
    "the a an and of to in is was it for on with as at by from that this be are or not have "
    "cat dog ship star sun moon sea wind boat sail river tree bread soup cook bake code data "
    "model graph node edge user adapter serve fast slow red blue green hello world yes no"
).split()


def make_tokenizer(path: Path, vocab_size: int = 256) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a fixed word list; saved to `path`."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<eos>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [" ".join(_WORDS[i:] + _WORDS[:i]) for i in range(len(_WORDS))]
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    fast.save_pretrained(path)
    return fast


def make_llama(
    path: Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    intermediate: int = 128,
    heads: int = 4,
    kv_heads: int = 2,
    vocab: int = 256,
    seed: int = 0,
    max_positions: int = 512,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """A random LLaMA-shaped causal LM plus tokenizer, saved as safetensors."""
    path.mkdir(parents=True, exist_ok=True)
    make_tokenizer(path, vocab)
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab,
        max_position_embeddings=max_positions, eos_token_id=0, pad_token_id=1, bos_token_id=None,
        tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    model.to(dtype)  # type: ignore[arg-type]  # transformers types .to() through a decorator
    model.save_pretrained(path, safe_serialization=True)
    return path


def make_gpt2(
    path: Path, *, hidden: int = 64, layers: int = 2, heads: int = 4, vocab: int = 256, seed: int = 0
) -> Path:
    """A random GPT-2 (Conv1D layers) plus tokenizer, saved as safetensors."""
    path.mkdir(parents=True, exist_ok=True)
    make_tokenizer(path, vocab)
    torch.manual_seed(seed)
    config = GPT2Config(
        n_embd=hidden, n_layer=layers, n_head=heads, vocab_size=vocab, n_positions=512,
        eos_token_id=0, bos_token_id=0, pad_token_id=1,
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(path, safe_serialization=True)
    return path


def make_adapter(
    base_dir: Path,
    out_dir: Path,
    *,
    rank: int = 4,
    alpha: float = 8.0,
    targets: Sequence[str] | str | None = None,
    rslora: bool = False,
    seed: int = 1,
    scale: float = 0.5,
    rank_pattern: dict[str, int] | None = None,
    alpha_pattern: dict[str, float] | None = None,
    exclude: Sequence[str] = (),
    **options: object,
) -> Path:
    """A PEFT LoRA adapter with random (non-zero) A and B, saved in PEFT's own format.

    `targets` is a list of module names or PEFT's "all-linear"; `options` go to `LoraConfig`
    unchanged (use_dora, modules_to_save...) to make adapters the runtime must refuse.
    """
    model = _load_base(base_dir)
    if targets is None:
        targets = GPT2_TARGETS if isinstance(model, GPT2LMHeadModel) else LLAMA_TARGETS
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # PEFT accepts float alphas
        target_modules=targets if isinstance(targets, str) else list(targets),
        exclude_modules=list(exclude) or None,
        use_rslora=rslora,
        init_lora_weights=False, rank_pattern=rank_pattern or {}, alpha_pattern=alpha_pattern or {},
        fan_in_fan_out=any(isinstance(m, Conv1D) for m in model.modules()),
        **options,  # type: ignore[arg-type]
    )  # fmt: skip
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn_like(param) * scale)
    peft_model.save_pretrained(str(out_dir))
    return out_dir


def install_adapter(adapters_dir: Path, name: str, version: str, source: Path) -> Path:
    """Place an adapter in the shared on-disk layout and make `version` active."""
    import os
    import shutil

    dest = adapters_dir / name / version
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, dest)
    link = adapters_dir / name / ACTIVE_LINK
    tmp = link.with_name(".tmp-active")
    tmp.unlink(missing_ok=True)
    os.symlink(version, tmp)
    os.replace(tmp, link)
    return dest


def write_domains(adapters_dir: Path, mapping: dict[str, str]) -> None:
    (adapters_dir / "domains.json").write_text(json.dumps(mapping))


def _load_base(base_dir: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(base_dir, use_safetensors=True, local_files_only=True)


def write_random_adapter(
    base_dir: Path, out_dir: Path, *, rank: int = 16, alpha: float = 32.0, targets: Sequence[str] = LLAMA_TARGETS,
    seed: int = 1, scale: float = 0.02, dtype: torch.dtype = torch.float32,
) -> Path:  # fmt: skip
    """A PEFT-format LoRA adapter written directly (no model load): fast for many or large adapters.

    The module shapes come from the base config on the meta device, so this costs no memory
    even for a billion-parameter base.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from saigon_runtime.engine.lora import lora_targets

    config = AutoConfig.from_pretrained(base_dir)
    with torch.device("meta"):
        shapes = lora_targets(AutoModelForCausalLM.from_config(config))
    g = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for module, shape in shapes.items():
        if module.rsplit(".", 1)[-1] not in targets:
            continue
        prefix = f"base_model.model.{module}"
        tensors[f"{prefix}.lora_A.weight"] = (torch.randn(rank, shape.in_features, generator=g) * scale).to(dtype)
        tensors[f"{prefix}.lora_B.weight"] = (torch.randn(shape.out_features, rank, generator=g) * scale).to(dtype)
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    (out_dir / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": list(targets),
                    "bias": "none", "use_rslora": False, "base_model_name_or_path": str(base_dir)})
    )  # fmt: skip
    return out_dir
