"""The per-row LoRA plan: segments by target set and rank, their merge past the limit, the byte bound
on cached compositions, and KV cache layers that decode into spare room."""

from __future__ import annotations

import torch
from engine_helpers import make_engine
from saigon_runtime.adapters.types import AdapterRef, DeviceAdapter
from saigon_runtime.engine import kv as kvops
from saigon_runtime.engine import lora
from saigon_runtime.engine.engine import Engine

# Ten rank sets over four target sets: more than MAX_SEGMENTS, so some segments merge (padded).
VARIANTS: dict[str, dict[str, object]] = {
    f"user_{i}": {"rank": rank, "alpha": 2.0 * rank, "targets": targets, "seed": 40 + i}
    for i, (rank, targets) in enumerate(
        [
            (2, None), (3, ["q_proj", "v_proj"]), (4, ["gate_proj", "up_proj", "down_proj"]), (5, None),
            (6, ["q_proj", "k_proj", "v_proj", "o_proj"]), (7, None), (8, ["q_proj", "v_proj"]), (9, None),
            (10, ["down_proj"]), (12, None),
        ]
    )
}  # fmt: skip


def _engine(tiny_llama_dir, adapter_factory, adapters_dir, install) -> Engine:
    for name, kwargs in VARIANTS.items():
        install(adapters_dir, name, "v1", adapter_factory(tiny_llama_dir, **kwargs))
    return make_engine(tiny_llama_dir, adapters_dir)


def _logits(engine: Engine, rows: list[DeviceAdapter | None], ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        engine.lora.set_rows(rows)
        return engine.model(input_ids=ids).logits


def test_a_mixed_batch_equals_each_row_run_alone_past_the_segment_limit(
    tiny_llama_dir, adapter_factory, adapters_dir, install
):
    engine = _engine(tiny_llama_dir, adapter_factory, adapters_dir, install)
    names: list[str | None] = [*VARIANTS, None]
    order = [3, 10, 0, 7, 5, 1, 9, 2, 8, 4, 6, 0]  # scrambled, a base row, one adapter twice
    devs = [engine.adapters.acquire(AdapterRef(n, "v1")) if n else None for n in (names[i] for i in order)]
    try:
        for tokens in (5, 1):  # a prefill and a decode-shaped step
            ids = torch.randint(2, 200, (len(devs), tokens), generator=torch.Generator().manual_seed(tokens))
            batch = _logits(engine, devs, ids)
            q_proj = engine.lora.weights["model.layers.0.self_attn.q_proj"]  # type: ignore[index]
            assert len(q_proj.unit.segments) == lora.MAX_SEGMENTS  # more rank sets than that: merged
            for i, dev in enumerate(devs):
                alone = _logits(engine, [dev], ids[i : i + 1])[0]
                assert (batch[i] - alone).abs().max() <= 1e-5, f"row {i} ({names[order[i]]})"
            base = _logits(engine, [None], ids[:1])[0]
            assert (batch[0] - base).abs().max() > 1e-3  # the adapters do change the output
    finally:
        for d in devs:
            if d is not None:
                engine.adapters.release(d)
        engine.stop()


def test_rows_of_different_ranks_are_not_padded_to_the_largest(tiny_llama_dir, adapter_factory, adapters_dir, install):
    engine = _engine(tiny_llama_dir, adapter_factory, adapters_dir, install)
    acquired = [engine.adapters.acquire(AdapterRef(n, "v1")) for n in ("user_0", "user_9", "user_0", "user_5")]
    devs = [d for d in acquired if d is not None]
    assert len(devs) == len(acquired)
    try:
        engine.lora.set_rows(devs)
        assert engine.lora.weights is not None
        qkv = engine.lora.weights["model.layers.1.self_attn.k_proj"]
        # One segment per rank (2, 7, 12), each as wide as its own rank on q, k and v.
        assert sorted(seg.a.shape[2] for seg in qkv.unit.segments) == [3 * 2, 3 * 7, 3 * 12]
        assert sorted(seg.end - seg.start for seg in qkv.unit.segments) == [1, 1, 2]
        assert sorted(b.shape[1] for _, _, _, b in qkv.parts) == [2, 7, 12]
    finally:
        for d in devs:
            engine.adapters.release(d)
        engine.stop()


def test_cached_compositions_stay_within_their_byte_bound(tiny_llama_dir, adapter_factory, adapters_dir, install):
    engine = _engine(tiny_llama_dir, adapter_factory, adapters_dir, install)
    acquired = [engine.adapters.acquire(AdapterRef(n, "v1")) for n in VARIANTS]
    devs = [d for d in acquired if d is not None]
    assert len(devs) == len(acquired)
    try:
        state = engine.lora
        state.set_rows(devs[:4])
        one = state.cached_bytes
        assert one > 0
        state._cache_bytes = int(one * 2.5)
        for start in range(1, 7):
            state.set_rows(devs[start : start + 4])
            assert state.cached_bytes <= state._cache_bytes
        newest = state.weights
        state.set_rows(devs[6:10])
        assert state.weights is newest  # the newest composition is still cached, not re-gathered
        state._cache_bytes = 1  # smaller than any composition: only the current one stays
        state.set_rows(devs[:2])
        assert len(state._cache) == 1
    finally:
        for d in devs:
            engine.adapters.release(d)
        engine.stop()


def test_cache_layers_decode_into_spare_room_and_equal_concatenation():
    cache = kvops.new_cache()
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(3, 2, 7, 4, generator=g)
    values = torch.randn(3, 2, 7, 4, generator=g)
    cache.update(keys, values, 0)
    layer = cache.layers[0]
    assert isinstance(layer, kvops.RoomyLayer)
    assert layer.keys is not None
    buffer = layer.keys.data_ptr()
    for _ in range(kvops.ROOM_MIN + 5):
        k, v = torch.randn(3, 2, 1, 4, generator=g), torch.randn(3, 2, 1, 4, generator=g)
        keys, values = torch.cat([keys, k], dim=-2), torch.cat([values, v], dim=-2)
        out_k, out_v = cache.update(k, v, 0)
        assert torch.equal(out_k, keys) and torch.equal(out_v, values)
        if keys.shape[-2] <= kvops.ROOM_MIN + 7:
            assert out_k.data_ptr() == buffer  # written into room, not copied
    assert cache.get_seq_length() == keys.shape[-2]
    # A layer whose views were replaced (a batch select) starts a new buffer from them.
    layer.batch_select_indices(torch.tensor([2, 0]))
    k, v = torch.randn(2, 2, 1, 4, generator=g), torch.randn(2, 2, 1, 4, generator=g)
    out_k, _ = cache.update(k, v, 0)
    assert torch.equal(out_k, torch.cat([keys[[2, 0]], k], dim=-2))


def test_rows_sharing_an_adapter_multiply_its_weights_once_and_equal_each_row_alone(
    tiny_llama_dir, adapter_factory, adapters_dir, install
):
    engine = _engine(tiny_llama_dir, adapter_factory, adapters_dir, install)
    # Ranks 2 (three rows), 7 and 9 (two rows each) and 5 (one row), all on every module; and a base row.
    names = ["user_0", "user_5", "user_0", None, "user_3", "user_0", "user_5", "user_7", "user_7"]
    devs = [engine.adapters.acquire(AdapterRef(n, "v1")) if n else None for n in names]
    try:
        engine.lora.set_rows(devs)
        assert engine.lora.weights is not None
        down = engine.lora.weights["model.layers.0.mlp.down_proj"]
        shapes = sorted((seg.groups, seg.end - seg.start, seg.a.shape[0]) for seg in down.unit.segments)
        # One stack per distinct adapter: (adapters, rows, stacked A) per segment.
        assert shapes == [(1, 1, 1), (1, 2, 1), (1, 2, 1), (1, 3, 1)]
        for tokens in (4, 1):
            ids = torch.randint(2, 200, (len(devs), tokens), generator=torch.Generator().manual_seed(7 + tokens))
            batch = _logits(engine, devs, ids)
            for i, dev in enumerate(devs):
                alone = _logits(engine, [dev], ids[i : i + 1])[0]
                assert (batch[i] - alone).abs().max() <= 1e-5, f"row {i} ({names[i]})"
    finally:
        for d in devs:
            if d is not None:
                engine.adapters.release(d)
        engine.stop()
