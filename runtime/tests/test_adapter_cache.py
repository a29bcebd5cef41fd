"""The tiered cache: LRU order, pinning, the bounded wait for a slot, unload, host tier, memory."""

from __future__ import annotations

import threading
import time

import pytest
from engine_helpers import make_engine, request
from saigon_runtime.adapters.types import AdapterRef
from saigon_runtime.engine.types import GenerationRequest, SamplingParams
from saigon_runtime.errors import EngineBusy

NAMES = [f"user_c{i}" for i in range(5)]


@pytest.fixture
def installed(tiny_llama_dir, adapter_factory, adapters_dir, install):
    for i, name in enumerate(NAMES):
        install(adapters_dir, name, "v1", adapter_factory(tiny_llama_dir, rank=2 + 2 * (i % 2), seed=50 + i))
    return adapters_dir


def _use(engine, name):
    ids = engine.tokenizer("hello world")["input_ids"]
    return engine.submit(request(ids, AdapterRef(name, "v1"))).result(30)


def test_least_recently_used_slot_is_evicted_and_pinned_ones_never(tiny_llama_dir, installed):
    engine = make_engine(tiny_llama_dir, installed, max_loras=2)
    try:
        _use(engine, "user_c0")
        _use(engine, "user_c1")
        _use(engine, "user_c0")  # c1 is now the least recently used
        _use(engine, "user_c2")
        assert set(engine.adapters.pool.resident()) == {("user_c0", "v1"), ("user_c2", "v1")}
        engine.adapters.pin("user_c0", True)
        for name in ("user_c3", "user_c4", "user_c1"):
            _use(engine, name)
            assert ("user_c0", "v1") in engine.adapters.pool.resident()
        stats = engine.adapters.stats()
        assert stats.hits >= 1 and stats.misses == 6 and stats.evictions == 4 and stats.loads == 6
        assert engine.adapters.info("user_c0").pinned and engine.adapters.info("user_c0").tier == "device"
    finally:
        engine.stop()


def test_a_request_waits_a_bounded_time_for_a_busy_slot_then_gets_a_clear_error(tiny_llama_dir, installed):
    engine = make_engine(tiny_llama_dir, installed, max_loras=1, slot_wait_timeout_s=0.5)
    try:
        ids = engine.tokenizer("hello world")["input_ids"]
        holding = threading.Event()
        slow = GenerationRequest(
            ids, AdapterRef("user_c0", "v1"), SamplingParams(temperature=0.0, max_new_tokens=300, ignore_eos=True),
            on_token=lambda ev: (holding.set(), time.sleep(0.01)),
        )  # fmt: skip
        first = engine.submit(slow)
        assert holding.wait(30)
        started = time.perf_counter()
        with pytest.raises(EngineBusy, match="every adapter slot is in use"):
            engine.submit(request(ids, AdapterRef("user_c1", "v1"))).result(30)
        assert time.perf_counter() - started < 5
        first.cancel()
        assert first.result(30).finish_reason == "cancelled"
        assert _use(engine, "user_c1").finish_reason in ("length", "stop")  # the slot is free again
    finally:
        engine.stop()


def test_a_waiting_request_gets_the_slot_when_it_frees(tiny_llama_dir, installed):
    engine = make_engine(tiny_llama_dir, installed, max_loras=1, slot_wait_timeout_s=30)
    try:
        ids = engine.tokenizer("hello world")["input_ids"]
        handles = [engine.submit(request(ids, AdapterRef(n, "v1"))) for n in NAMES]
        assert all(h.result(60).finish_reason in ("length", "stop") for h in handles)
        assert engine.adapters.stats().evictions == len(NAMES) - 1
    finally:
        engine.stop()


def test_a_starving_request_is_served_next_while_rows_that_end_sooner_still_fill_the_batch(tiny_llama_dir, installed):
    engine = make_engine(tiny_llama_dir, installed, max_loras=1, slot_wait_timeout_s=30)
    try:
        ids = engine.tokenizer("hello world")["input_ids"]
        first_token: dict[str, float] = {}

        def tracked(key: str, name: str, new: int, delay: float = 0.0) -> GenerationRequest:
            def on_token(_ev: object) -> None:
                first_token.setdefault(key, time.perf_counter())
                time.sleep(delay)

            sampling = SamplingParams(temperature=0.0, max_new_tokens=new, ignore_eos=True)
            return GenerationRequest(ids, AdapterRef(name, "v1"), sampling, on_token=on_token)

        holder = engine.submit(tracked("holder", "user_c0", 150, delay=0.02))
        while "holder" not in first_token:
            time.sleep(0.01)
        starving = engine.submit(tracked("starving", "user_c1", 4))
        time.sleep(engine.starvation_s + 0.3)  # the other adapter now starves for the only slot
        longer = engine.submit(tracked("longer", "user_c0", 400))  # would hold the slot past the holder
        shorter = engine.submit(tracked("shorter", "user_c0", 5))  # ends before the holder: may join
        shorter_done = shorter.result(60)
        assert not holder.done(), "a row that ends sooner joins the held slot at once"
        assert shorter_done.finish_reason == "length"
        holder_result, starving_result, longer_result = holder.result(60), starving.result(60), longer.result(60)
        assert {r.finish_reason for r in (holder_result, starving_result, longer_result)} == {"length"}
        assert first_token["starving"] < first_token["longer"], "the starving request got the slot first"
    finally:
        engine.stop()


def test_unload_frees_the_slot_for_real_and_the_name_stops_serving(tiny_llama_dir, installed):
    engine = make_engine(tiny_llama_dir, installed, max_loras=4)
    try:
        _use(engine, "user_c0")
        _use(engine, "user_c1")
        before = engine.adapters.stats().device_bytes
        engine.adapters.unload("user_c0")
        after = engine.adapters.stats()
        assert ("user_c0", "v1") not in engine.adapters.pool.resident()
        assert after.resident_device == 1 and after.device_bytes < before
        assert engine.adapters.resolve("c0").adapter is None
        engine.adapters.load("user_c0")
        assert engine.adapters.resolve("c0").adapter == AdapterRef("user_c0", "v1")
    finally:
        engine.stop()


def test_memory_is_each_adapter_own_bytes_and_disk_adapters_cost_nothing(tiny_llama_dir, installed):
    engine = make_engine(tiny_llama_dir, installed, max_loras=8, max_cpu_loras=2)
    try:
        assert engine.adapters.stats().device_bytes == 0  # five adapters on disk, none loaded
        expected = 0
        for name in NAMES[:3]:
            _use(engine, name)
            a = engine.adapters.host_adapter(AdapterRef(name, "v1"))
            expected += sum(x.numel() * x.element_size() + y.numel() * y.element_size() for x, y in a.modules.values())
        stats = engine.adapters.stats()
        assert stats.device_bytes == expected
        assert stats.resident_host == 2 and stats.host_evictions >= 1
    finally:
        engine.stop()
