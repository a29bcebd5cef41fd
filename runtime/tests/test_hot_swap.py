"""A new version becomes current between steps; running requests finish on the version they began with."""

from __future__ import annotations

import threading

from engine_helpers import make_engine, wait_for
from saigon_runtime.engine.types import GenerationRequest, SamplingParams


def test_hot_swap_under_concurrent_requests(tiny_llama_dir, adapter_factory, adapters_dir, install, tmp_path):
    v1 = adapter_factory(tiny_llama_dir, rank=4, seed=60)
    v2 = adapter_factory(tiny_llama_dir, rank=8, seed=61)
    install(adapters_dir, "user_hs", "v1", v1)
    engine = make_engine(tiny_llama_dir, adapters_dir, max_loras=4)
    sampling = SamplingParams(temperature=0.0, max_new_tokens=12, ignore_eos=True)
    try:
        ids = engine.tokenizer("a ship on the sea")["input_ids"]

        def ask() -> tuple[str, list[int]]:
            res = engine.adapters.resolve("hs")
            assert res.adapter is not None
            out = engine.submit(GenerationRequest(ids, res.adapter, sampling)).result(60)
            assert out.adapter is not None
            return out.adapter.version, out.token_ids

        expected = {"v1": ask()[1]}
        results: list[tuple[str, list[int]]] = []
        errors: list[BaseException] = []
        swapped = threading.Event()

        def client() -> None:
            try:
                for _ in range(12):
                    results.append(ask())
                    if len(results) == 8:
                        swapped.wait(30)
            except BaseException as exc:  # collected, asserted below
                errors.append(exc)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        while len(results) < 6:
            threading.Event().wait(0.01)
        engine.adapters.load("user_hs", "v2", v2)
        swapped.set()
        for t in threads:
            t.join(120)
        assert not errors
        expected["v2"] = ask()[1]
        assert expected["v1"] != expected["v2"]
        assert len(results) == 48
        # Every answer is exactly one version's answer, and the new one is served after the swap.
        assert all(tokens == expected[version] for version, tokens in results)
        assert {v for v, _ in results} == {"v1", "v2"}
        assert engine.adapters.current_version("user_hs") == "v2"
        assert (adapters_dir / "user_hs" / "active").readlink().name == "v2"
    finally:
        engine.stop()


def test_a_request_that_resolved_the_previous_version_is_served_by_it_after_that_version_is_collected(
    tiny_llama_dir, adapter_factory, adapters_dir, install
):
    """A promotion's agent unloads the previous version and removes its files once the new one is
    current; a request that resolved the previous one just before (still tokenizing or queued) must
    not fail for it."""
    v1 = adapter_factory(tiny_llama_dir, rank=4, seed=62)
    v2 = adapter_factory(tiny_llama_dir, rank=4, seed=63)
    install(adapters_dir, "user_gc", "v1", v1)
    engine = make_engine(tiny_llama_dir, adapters_dir, max_loras=4)
    sampling = SamplingParams(temperature=0.0, max_new_tokens=6, ignore_eos=True)
    try:
        ids = engine.tokenizer("a ship on the sea")["input_ids"]
        expected = engine.generate(GenerationRequest(ids, engine.adapters.resolve("gc").adapter, sampling), 60)
        resolved = engine.adapters.resolve("gc").adapter
        assert resolved is not None and resolved.version == "v1"
        engine.adapters.load("user_gc", "v2", v2)
        engine.adapters.unload("user_gc", "v1")
        engine.adapters.store.remove_version("user_gc", "v1")
        assert not (adapters_dir / "user_gc" / "v1").exists()
        out = engine.generate(GenerationRequest(ids, resolved, sampling), 60)
        assert out.adapter is not None and out.adapter.version == "v1"
        assert out.token_ids == expected.token_ids
        assert ("user_gc", "v1") not in engine.adapters.pool.resident()
        assert engine.adapters.resolve("gc").adapter.version == "v2"
    finally:
        engine.stop()


def test_an_unloaded_slot_still_in_use_serves_the_requests_that_resolved_it_then_goes(
    tiny_llama_dir, adapter_factory, adapters_dir, install
):
    install(adapters_dir, "user_dm", "v1", adapter_factory(tiny_llama_dir, rank=4, seed=64))
    engine = make_engine(tiny_llama_dir, adapters_dir, max_loras=4)
    try:
        pool = engine.adapters.pool
        ref = engine.adapters.resolve("dm").adapter
        host = engine.adapters.host_adapter(ref)
        running = pool.try_acquire(host)  # what a running request holds
        engine.adapters.unload("user_dm", "v1")
        assert not pool.is_resident(("user_dm", "v1")) and pool.nbytes() == running.nbytes
        queued = pool.try_acquire(host)  # a request that resolved v1 before the unload
        assert queued is running and pool.nbytes() == running.nbytes
        pool.release(running)
        assert pool.nbytes() == running.nbytes  # the queued one still holds it
        pool.release(queued)
        assert pool.nbytes() == 0 and pool.resident() == []
    finally:
        engine.stop()


def test_waiting_requests_pin_no_host_copies_beyond_the_tier_until_their_version_is_unloaded(
    tiny_llama_dir, adapter_factory, adapters_dir, install, monkeypatch
):
    """Refs of requests still queued must not keep every adapter they name in host memory (a
    burst across thousands of users would hold one copy each); only a version unloaded while
    they wait is kept for them, and only as long as they wait."""
    import gc
    import weakref

    from saigon_runtime.adapters import manager as manager_module

    copies: list[weakref.ref] = []
    real_load = manager_module.load_adapter

    def counted(*args, **kwargs):
        host = real_load(*args, **kwargs)
        copies.append(weakref.ref(host))
        return host

    monkeypatch.setattr(manager_module, "load_adapter", counted)
    for i in range(5):
        install(adapters_dir, f"user_q{i}", "v1", adapter_factory(tiny_llama_dir, rank=4, seed=70 + i))
    engine = make_engine(tiny_llama_dir, adapters_dir, max_loras=2, max_cpu_loras=2)
    sampling = SamplingParams(temperature=0.0, max_new_tokens=6, ignore_eos=True)
    try:
        ids = engine.tokenizer("a ship on the sea")["input_ids"]
        expected = engine.generate(GenerationRequest(ids, engine.adapters.resolve("q0").adapter, sampling), 60)
        waiting = [engine.adapters.resolve(f"q{i}").adapter for i in range(5)]
        gc.collect()
        assert sum(c() is not None for c in copies) <= 2  # the host tier's, none for the queue

        # q0 left the host tier; v2 promoted, v1 unloaded and its files removed while its request waits.
        engine.adapters.load("user_q0", "v2", adapter_factory(tiny_llama_dir, rank=4, seed=80))
        engine.adapters.unload("user_q0", "v1")
        engine.adapters.store.remove_version("user_q0", "v1")
        kept = waiting[0].hold.host
        assert kept is not None
        out = engine.generate(GenerationRequest(ids, waiting[0], sampling), 60)
        assert out.adapter is not None and out.adapter.version == "v1" and out.token_ids == expected.token_ids

        gone = weakref.ref(kept)
        del kept, out, waiting, expected

        def freed() -> bool:  # no request holds v1 any more: nor may the runtime
            gc.collect()
            return gone() is None

        # The answer arrives before the engine's thread lets its finished row go: wait for that.
        wait_for(freed, "the unloaded version's host copy to be freed", 30.0)
    finally:
        engine.stop()
