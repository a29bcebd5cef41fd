"""Any decoder-only family transformers ships: greedy tokens equal PEFT's, alone and mixed.

Every model in the zoo gets three adapters on PEFT's "all-linear" (attention only on the
fused mixture-of-experts models, whose "all-linear" means expert LoRA, refused below) with
different ranks and alphas. Each adapter is served alone, then all of them and the base
together in one batch with prompts of different lengths.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_helpers import peft_greedy, peft_reference, request
from saigon_runtime.adapters.types import AdapterRef
from saigon_runtime.assembly import build_engine
from saigon_runtime.config import RuntimeConfig
from saigon_runtime.engine.engine import Engine
from saigon_runtime.engine.types import SamplingParams
from saigon_runtime.errors import AdapterRejected
from saigon_runtime.testing.tiny import install_adapter, make_adapter
from saigon_runtime.testing.zoo import ZOO, make_zoo_model

NEW_TOKENS = 6
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=NEW_TOKENS)
# Lengths 7, 2, 5 and 10: with the new tokens, longer than the zoo's sliding windows (6).
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [20, 21], [30, 31, 32, 33, 34], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49]]
ADAPTERS = {  # name: (rank, alpha, rslora)
    "user_r2": (2, 5.0, False),
    "user_r4": (4, 16.0, True),
    "user_r8": (8, 4.0, False),
}
MOE_WITH_FUSED_EXPERTS = [name for name, entry in ZOO.items() if entry.all_linear_has_expert_lora]


def _engine(base: Path, adapters: Path) -> Engine:
    return build_engine(RuntimeConfig(base_model_dir=base, adapters_dir=adapters, device="cpu"))


def _serve_together(engine: Engine, rows: list[tuple[str | None, list[int]]]) -> list[list[int]]:
    """Queue every request before the engine thread starts, so they are prefilled as one batch."""
    handles = [engine.submit(request(ids, AdapterRef(n, "v1") if n else None, GREEDY)) for n, ids in rows]
    engine.start()
    return [h.result(120).token_ids for h in handles]


def test_the_zoo_covers_fifteen_families_with_opt_and_mixture_of_experts():
    assert len(ZOO) >= 15
    assert {"opt", "mixtral", "qwen2_moe", "phi3", "gpt_neox", "bloom", "falcon", "mpt", "mistral"} <= set(ZOO)


@pytest.mark.parametrize("arch", sorted(ZOO))
def test_greedy_tokens_equal_peft_alone_and_in_one_mixed_batch(arch, tmp_path):
    base = make_zoo_model(tmp_path / "base", arch)
    adapters_dir = tmp_path / "adapters"
    sources: dict[str, Path] = {}
    for i, (name, (rank, alpha, rslora)) in enumerate(ADAPTERS.items()):
        sources[name] = make_adapter(
            base, tmp_path / name, rank=rank, alpha=alpha, rslora=rslora, targets=ZOO[arch].targets, seed=i, scale=0.3
        )
        install_adapter(adapters_dir, name, "v1", sources[name])
    peft = peft_reference(base, sources)
    rows: list[tuple[str | None, list[int]]] = list(zip([*ADAPTERS, None], PROMPTS, strict=True))
    expected = [peft_greedy(peft, name, ids, NEW_TOKENS) for name, ids in rows]

    alone = _engine(base, adapters_dir)
    alone.start()
    try:
        for (name, ids), want in zip(rows, expected, strict=True):
            adapter = AdapterRef(name, "v1") if name else None
            assert alone.generate(request(ids, adapter, GREEDY), timeout=120).token_ids == want, name
    finally:
        alone.stop()

    mixed = _engine(base, adapters_dir)
    try:
        assert _serve_together(mixed, rows) == expected
        assert mixed.stats().steps < len(rows) * NEW_TOKENS  # rows shared decode steps: one batch
    finally:
        mixed.stop()
    # The adapters change the answers, so equality with PEFT is not equality with the base.
    base_answers = [peft_greedy(peft, None, ids, NEW_TOKENS) for _, ids in rows[:-1]]
    assert base_answers != expected[:-1]


@pytest.mark.parametrize("arch", MOE_WITH_FUSED_EXPERTS)
def test_expert_lora_on_fused_experts_is_refused_naming_it(arch, tmp_path):
    base = make_zoo_model(tmp_path / "base", arch)
    adapters_dir = tmp_path / "adapters"
    install_adapter(adapters_dir, "user_moe", "v1", make_adapter(base, tmp_path / "moe", targets="all-linear"))
    engine = _engine(base, adapters_dir)
    try:
        with pytest.raises(AdapterRejected, match="expert or router weights"):
            engine.adapters.host_adapter(AdapterRef("user_moe", "v1"))
    finally:
        engine.stop()
