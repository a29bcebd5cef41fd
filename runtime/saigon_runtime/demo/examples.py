"""Greedy answers from the demo adapters, computed with PEFT directly (independent of the engine)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from peft import PeftModel
from transformers import AutoTokenizer, LlamaForCausalLM

from saigon_runtime.demo.build import DemoAssets

BASE_LABEL = "base"


def greedy_answers(
    assets: DemoAssets, prompts: Sequence[str], adapters: Sequence[str], max_new_tokens: int = 64
) -> dict[str, dict[str, str]]:
    """{adapter name or "base": {prompt: answer}}, each adapter at its active version."""
    tokenizer = AutoTokenizer.from_pretrained(str(assets.base_model_dir))
    base = LlamaForCausalLM.from_pretrained(str(assets.base_model_dir))
    answers = {BASE_LABEL: _answer_all(base, tokenizer, prompts, max_new_tokens)}
    model: PeftModel | None = None
    for name in adapters:
        path = str(assets.adapters_dir / name / "active")
        if model is None:
            model = PeftModel.from_pretrained(base, path, adapter_name=name)
        else:
            model.load_adapter(path, adapter_name=name)
        model.set_adapter(name)
        answers[name] = _answer_all(model, tokenizer, prompts, max_new_tokens)
    return answers


@torch.no_grad()
def _answer_all(
    model: torch.nn.Module, tokenizer: object, prompts: Sequence[str], max_new_tokens: int
) -> dict[str, str]:
    out: dict[str, str] = {}
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)  # type: ignore[operator]
        generated = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)  # type: ignore[operator]
        new_tokens = generated[0, ids["input_ids"].shape[1] :]
        out[prompt] = tokenizer.decode(new_tokens, skip_special_tokens=True).strip()  # type: ignore[attr-defined]
    return out
