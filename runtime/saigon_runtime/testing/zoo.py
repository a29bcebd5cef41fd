"""A zoo of tiny random decoder-only models, one per architecture family transformers ships.

Each entry is the smallest config that still exercises what makes the family different:
fused projections (phi3's qkv_proj, gpt_neox/bloom/falcon's query_key_value, gpt2's Conv1D
c_attn), tied embeddings (gemma, opt, bloom), ALiBi (bloom, falcon, mpt), sliding windows
shorter than the test prompts (mistral, gemma2/3, starcoder2), flattened tokens before a
Linear (opt's fc1) and mixture-of-experts blocks (mixtral, qwen2_moe, qwen3_moe).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from saigon_runtime.testing.tiny import make_tokenizer

VOCAB = 256
_TOKENS = {"vocab_size": VOCAB, "eos_token_id": 0, "pad_token_id": 1, "bos_token_id": None}
_LLAMA_LIKE = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 256,
}  # fmt: skip
_WINDOW = {"sliding_window": 6}  # shorter than the longest test prompt plus its new tokens
_HEAD_DIM = {"head_dim": 8}


_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class ZooModel:
    model_type: str
    config: Mapping[str, object]
    # What a servable adapter targets. PEFT's "all-linear" on fused mixture-of-experts blocks also
    # puts LoRA on the expert and router parameters, which the runtime refuses; those models
    # take an attention-only adapter instead.
    targets: str | tuple[str, ...] = "all-linear"

    @property
    def all_linear_has_expert_lora(self) -> bool:
        return self.targets != "all-linear"


ZOO: dict[str, ZooModel] = {
    m.model_type: m
    for m in (
        ZooModel("llama", _LLAMA_LIKE),
        ZooModel("mistral", {**_LLAMA_LIKE, **_WINDOW}),
        ZooModel("qwen2", _LLAMA_LIKE),
        ZooModel("qwen3", {**_LLAMA_LIKE, **_HEAD_DIM}),
        ZooModel("gemma", {**_LLAMA_LIKE, **_HEAD_DIM}),
        ZooModel("gemma2", {**_LLAMA_LIKE, **_HEAD_DIM, **_WINDOW}),
        ZooModel("gemma3_text", {**_LLAMA_LIKE, **_HEAD_DIM, **_WINDOW}),
        ZooModel("phi", _LLAMA_LIKE),
        ZooModel("phi3", _LLAMA_LIKE),
        ZooModel("olmo", _LLAMA_LIKE),
        ZooModel("olmo2", _LLAMA_LIKE),
        ZooModel("granite", _LLAMA_LIKE),
        ZooModel("stablelm", _LLAMA_LIKE),
        ZooModel("starcoder2", {**_LLAMA_LIKE, **_WINDOW}),
        ZooModel("cohere", _LLAMA_LIKE),
        ZooModel("opt", {"hidden_size": 32, "ffn_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                         "word_embed_proj_dim": 32, "max_position_embeddings": 256}),
        ZooModel("gpt2", {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 256}),
        ZooModel("gpt_bigcode", {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 256}),
        ZooModel("gptj", {"n_embd": 32, "n_layer": 2, "n_head": 4, "rotary_dim": 4, "n_positions": 256}),
        ZooModel("codegen", {"n_embd": 32, "n_layer": 2, "n_head": 4, "rotary_dim": 4, "n_positions": 256}),
        ZooModel("gpt_neox", {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                              "num_attention_heads": 4, "max_position_embeddings": 256}),
        ZooModel("bloom", {"hidden_size": 32, "n_layer": 2, "n_head": 4}),
        ZooModel("falcon", {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "alibi": True,
                            "new_decoder_architecture": False, "multi_query": True}),
        ZooModel("mpt", {"d_model": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 256, "expansion_ratio": 2}),
        ZooModel("qwen2_moe", {**_LLAMA_LIKE, "num_experts": 4, "num_experts_per_tok": 2,
                               "moe_intermediate_size": 32, "shared_expert_intermediate_size": 64}),
        ZooModel("mixtral", {**_LLAMA_LIKE, "num_local_experts": 4, "num_experts_per_tok": 2}, _ATTENTION),
        ZooModel("qwen3_moe", {**_LLAMA_LIKE, **_HEAD_DIM, "num_experts": 4, "num_experts_per_tok": 2,
                               "moe_intermediate_size": 32}, _ATTENTION),
    )
}  # fmt: skip


def make_zoo_model(path: Path, model_type: str, seed: int = 0) -> Path:
    """A random model of the family plus the shared byte-level tokenizer, saved as safetensors."""
    entry = ZOO[model_type]
    path.mkdir(parents=True, exist_ok=True)
    make_tokenizer(path, VOCAB)
    torch.manual_seed(seed)
    config = AutoConfig.for_model(entry.model_type, **entry.config, **_TOKENS)
    AutoModelForCausalLM.from_config(config).save_pretrained(path, safe_serialization=True)
    return path
