"""The device tier is sized from a memory budget and the adapters' ranks, not a fixed count."""

from __future__ import annotations

from engine_helpers import make_engine
from saigon_runtime.adapters.types import AdapterRef
from saigon_runtime.config import RuntimeConfig
from saigon_runtime.engine.memory import NOMINAL_RANK, plan_adapter_memory


def test_the_default_budget_holds_far_more_than_eight_adapters(tiny_llama_dir):
    assert RuntimeConfig().max_loras is None  # no fixed count by default
    engine = make_engine(tiny_llama_dir, None)
    try:
        plan = plan_adapter_memory(
            engine.model, engine.lora.shapes, engine.torch_device, engine.dtype, utilization=0.9,
            max_batch_size=32, max_rank=64,
        )  # fmt: skip
        assert plan.adapter_budget > 0 and plan.in_use > 0 and plan.total > plan.adapter_budget
        pool = engine.adapters.pool
        assert pool.byte_budget is not None and pool.byte_budget > 0 and pool.max_slots is None
        assert pool.capacity == pool.byte_budget // (plan.bytes_per_rank * NOMINAL_RANK)
        assert pool.capacity > 64
    finally:
        engine.stop()


def test_the_budget_counts_bytes_so_low_ranks_fit_more(tiny_llama_dir, adapter_factory, adapters_dir, install):
    # A budget too small for anything but the floor: room for one adapter of max_rank (8) exactly.
    for i in range(3):
        install(adapters_dir, f"user_r4_{i}", "v1", adapter_factory(tiny_llama_dir, rank=4, seed=60 + i))
    install(adapters_dir, "user_r8", "v1", adapter_factory(tiny_llama_dir, rank=8, seed=70))
    engine = make_engine(tiny_llama_dir, adapters_dir, memory_utilization=1e-9, max_rank=8)
    pool = engine.adapters.pool
    try:
        held = [engine.adapters.acquire(AdapterRef(f"user_r4_{i}", "v1")) for i in range(3)]
        assert held[0] is not None and held[1] is not None  # two of rank 4 fit where one of rank 8 does
        assert held[2] is None  # the third waits: both slots are in use
        assert pool.nbytes() <= pool.byte_budget
        for dev in held[:2]:
            assert dev is not None
            engine.adapters.release(dev)
        big = engine.adapters.acquire(AdapterRef("user_r8", "v1"))
        assert big is not None and pool.resident() == [("user_r8", "v1")]  # both rank-4 adapters left
        assert pool.capacity == 1
        engine.adapters.release(big)
    finally:
        engine.stop()


def test_an_explicit_cache_size_still_caps_the_count(tiny_llama_dir, adapter_factory, adapters_dir, install):
    for i in range(3):
        install(adapters_dir, f"user_{i}", "v1", adapter_factory(tiny_llama_dir, rank=2, seed=80 + i))
    engine = make_engine(tiny_llama_dir, adapters_dir, max_loras=2)
    try:
        held = [engine.adapters.acquire(AdapterRef(f"user_{i}", "v1")) for i in range(3)]
        assert [d is not None for d in held] == [True, True, False]
        assert engine.adapters.pool.capacity == 2
    finally:
        for d in held:
            if d is not None:
                engine.adapters.release(d)
        engine.stop()
