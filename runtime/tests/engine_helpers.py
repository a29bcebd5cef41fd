"""Helpers for engine tests: an engine over a tiny model, and PEFT references to compare with."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from peft import PeftModel
from saigon_runtime.adapters.types import AdapterRef
from saigon_runtime.assembly import build_engine
from saigon_runtime.config import RuntimeConfig
from saigon_runtime.engine.engine import Engine
from saigon_runtime.engine.types import GenerationRequest, SamplingParams
from transformers import AutoModelForCausalLM

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=8)


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Polls until `predicate()` holds: for what the engine's thread does after it answers."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def make_engine(base: Path, adapters: Path | None, **overrides: object) -> Engine:
    config = RuntimeConfig(base_model_dir=base, adapters_dir=adapters, device="cpu", **overrides)  # type: ignore[arg-type]
    engine = build_engine(config)
    engine.start()
    return engine


def peft_reference(base: Path, adapters: dict[str, Path]) -> PeftModel:
    model = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True, local_files_only=True)
    names = list(adapters)
    peft = PeftModel.from_pretrained(model, adapters[names[0]], adapter_name=names[0])
    for name in names[1:]:
        peft.load_adapter(adapters[name], adapter_name=name)
    return peft.eval()


def peft_greedy(peft: PeftModel, adapter: str | None, ids: list[int], new_tokens: int) -> list[int]:
    inputs = torch.tensor([ids])
    kwargs = {"max_new_tokens": new_tokens, "do_sample": False, "pad_token_id": 1, "eos_token_id": 0}
    with torch.inference_mode():
        if adapter is None:
            with peft.disable_adapter():
                out = peft.generate(input_ids=inputs, **kwargs)
        else:
            peft.set_adapter(adapter)
            out = peft.generate(input_ids=inputs, **kwargs)
    return [int(t) for t in out[0, len(ids) :]]


def request(ids: list[int], adapter: AdapterRef | None, sampling: SamplingParams = GREEDY) -> GenerationRequest:
    return GenerationRequest(prompt_ids=list(ids), adapter=adapter, sampling=sampling)
