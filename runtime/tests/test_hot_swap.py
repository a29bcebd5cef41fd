"""A new version becomes current between steps; running requests finish on the version they began with."""

from __future__ import annotations

import threading

from engine_helpers import make_engine
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
