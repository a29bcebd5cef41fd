"""Mixed-adapter batches give PEFT's results: logits within 1e-4 and identical greedy tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_helpers import make_engine, peft_greedy, peft_reference, request
from saigon_runtime.adapters.types import AdapterRef
from saigon_runtime.errors import InvalidRequest

PROMPTS = ["the cat and the dog", "hello world", "a ship on the sea with wind", "red", "code data model graph node"]

LLAMA_VARIANTS: dict[str, dict[str, object]] = {
    "user_all_r4": {"rank": 4, "alpha": 8.0, "seed": 11},
    "user_qv_r8": {"rank": 8, "alpha": 4.0, "targets": ["q_proj", "v_proj"], "seed": 12},
    "user_mlp_rslora": {"rank": 2, "alpha": 16.0, "targets": ["gate_proj", "up_proj", "down_proj"], "rslora": True,
                        "seed": 13},
    "domain_patterns": {"rank": 4, "alpha": 8.0, "rank_pattern": {"q_proj": 6}, "alpha_pattern": {"o_proj": 3.0},
                        "seed": 14},
}  # fmt: skip
GPT2_VARIANTS: dict[str, dict[str, object]] = {
    "user_conv_r4": {"rank": 4, "alpha": 8.0, "seed": 21},
    "user_conv_attn_r2": {"rank": 2, "alpha": 2.0, "targets": ["c_attn"], "seed": 22},
}


def _setup(base: Path, variants: dict[str, dict[str, object]], adapter_factory, adapters_dir: Path, install):
    sources = {name: adapter_factory(base, **kw) for name, kw in variants.items()}
    for name, src in sources.items():
        install(adapters_dir, name, "v1", src)
    return sources


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_mixed_batch_logits_match_peft(arch, tiny_llama_dir, tiny_gpt2_dir, adapter_factory, adapters_dir, install):
    base = tiny_llama_dir if arch == "llama" else tiny_gpt2_dir
    variants = LLAMA_VARIANTS if arch == "llama" else GPT2_VARIANTS
    sources = _setup(base, variants, adapter_factory, adapters_dir, install)
    peft = peft_reference(base, sources)
    engine = make_engine(base, adapters_dir)
    try:
        names: list[str | None] = [*variants, None]
        rows = [(names[i % len(names)], PROMPTS[i % len(PROMPTS)]) for i in range(2 * len(names))]
        encoded = [engine.tokenizer(p)["input_ids"] for _, p in rows]
        length = max(map(len, encoded))
        ids = torch.full((len(rows), length), 1)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, e in enumerate(encoded):
            ids[i, length - len(e) :] = torch.tensor(e)
            mask[i, length - len(e) :] = 1
        devs = [engine.adapters.acquire(AdapterRef(n, "v1")) if n else None for n, _ in rows]
        with torch.inference_mode():
            engine.lora.set_rows(devs)
            ours = engine.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
            engine.lora.set_rows([None] * len(rows))
            worst = 0.0
            for i, ((name, _), e) in enumerate(zip(rows, encoded, strict=True)):
                if name is None:
                    with peft.disable_adapter():
                        ref = peft(input_ids=torch.tensor([e])).logits[0]
                else:
                    peft.set_adapter(name)
                    ref = peft(input_ids=torch.tensor([e])).logits[0]
                diff = (ours.logits[i, length - len(e) :] - ref).abs().max().item()
                worst = max(worst, diff)
                assert ref.abs().max() > 0.01  # the comparison is not between two zero tensors
        assert worst <= 1e-4, f"max |logit difference| {worst}"
        # The adapters really change the output: not equal to the base model.
        with torch.inference_mode(), peft.disable_adapter():
            base_logits = peft(input_ids=torch.tensor([encoded[0]])).logits[0]
        assert (ours.logits[0, length - len(encoded[0]) :] - base_logits).abs().max() > 1e-3
    finally:
        for d in devs:
            if d is not None:
                engine.adapters.release(d)
        engine.stop()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_mixed_batch_greedy_tokens_match_peft(
    arch, tiny_llama_dir, tiny_gpt2_dir, adapter_factory, adapters_dir, install
):
    base = tiny_llama_dir if arch == "llama" else tiny_gpt2_dir
    variants = LLAMA_VARIANTS if arch == "llama" else GPT2_VARIANTS
    sources = _setup(base, variants, adapter_factory, adapters_dir, install)
    peft = peft_reference(base, sources)
    engine = make_engine(base, adapters_dir)
    try:
        names: list[str | None] = [*variants, None]
        jobs = [(name, prompt) for prompt in PROMPTS[:3] for name in names]
        handles = []
        for name, prompt in jobs:
            ids = engine.tokenizer(prompt)["input_ids"]
            handles.append((name, ids, engine.submit(request(ids, AdapterRef(name, "v1") if name else None))))
        answers: dict[tuple[int, ...], set[tuple[int, ...]]] = {}
        for name, ids, handle in handles:
            result = handle.result(60)
            assert result.finish_reason in ("length", "stop")
            assert result.adapter == (AdapterRef(name, "v1") if name else None)
            assert result.token_ids == peft_greedy(peft, name, ids, 8), f"adapter {name}"
            answers.setdefault(tuple(ids), set()).add(tuple(result.token_ids))
        # Different adapters really answer one prompt differently.
        assert all(len(outs) >= 2 for outs in answers.values())
    finally:
        engine.stop()


def test_score_is_peft_mean_nll_and_leaves_the_running_batch_alone(
    tiny_llama_dir, adapter_factory, adapters_dir, install
):
    sources = _setup(tiny_llama_dir, {"user_all_r4": LLAMA_VARIANTS["user_all_r4"]}, adapter_factory, adapters_dir,
                     install)  # fmt: skip
    peft = peft_reference(tiny_llama_dir, sources)
    engine = make_engine(tiny_llama_dir, adapters_dir)
    try:
        prompt = engine.tokenizer("the cat and the dog")["input_ids"]
        completion = engine.tokenizer(" a ship on the sea")["input_ids"]
        ids = torch.tensor([prompt + completion])
        expected = {}
        with torch.inference_mode():
            for name in ("user_all_r4", None):
                if name is None:
                    with peft.disable_adapter():
                        logits = peft(input_ids=ids).logits
                else:
                    peft.set_adapter(name)
                    logits = peft(input_ids=ids).logits
                nll = torch.nn.functional.cross_entropy(logits[0, len(prompt) - 1 : -1], torch.tensor(completion))
                expected[name] = float(nll)
        ref = AdapterRef("user_all_r4", "v1")
        running = engine.submit(request(prompt, ref))  # scoring between its steps must not change it
        assert abs(engine.score(prompt, completion, ref) - expected["user_all_r4"]) < 1e-4
        assert abs(engine.score(prompt, completion, None) - expected[None]) < 1e-4
        assert expected["user_all_r4"] != pytest.approx(expected[None], abs=1e-3)  # the adapter mattered
        assert running.result(60).token_ids == peft_greedy(peft, "user_all_r4", prompt, 8)
        with pytest.raises(InvalidRequest, match="needs a prompt and a completion"):
            engine.score(prompt, [], ref)
    finally:
        engine.stop()
