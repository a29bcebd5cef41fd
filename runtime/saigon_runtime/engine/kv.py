"""The running batch's KV cache: left-padded rows that can be merged, filtered and trimmed.

New requests are prefilled on their own, then merged into the running batch by padding
the shorter side on the left; finished rows are dropped with an index select. Each layer
keeps spare room at the end of its buffers, so a decode step writes one token per row where
transformers' DynamicLayer re-concatenates the whole cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

ROOM_MIN = 64  # tokens of spare room a layer's buffers get when they grow (at least half their length)


class RoomyLayer(DynamicLayer):
    """A full-attention cache layer whose keys and values are views into buffers with spare room.

    Growing copies the cache once per ROOM_MIN tokens (or half its length), not once per token."""

    _keys_buffer: torch.Tensor | None = None
    _values_buffer: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        keys, values = self.keys, self.values
        assert keys is not None and values is not None  # set by lazy_initialization
        length = self.get_seq_length()
        end = length + key_states.shape[-2]
        kb, vb = self._keys_buffer, self._values_buffer
        # The views handed out last are still ours unless someone replaced them (crop, batch select).
        ours = kb is not None and vb is not None and _is_view_of(keys, kb) and _is_view_of(values, vb)
        if not ours or kb is None or vb is None or end > kb.shape[-2]:
            room = end + max(ROOM_MIN, end // 2)
            kb, vb = _room_for(keys, key_states, room), _room_for(values, value_states, room)
            self._keys_buffer, self._values_buffer = kb, vb
        kb[:, :, length:end].copy_(key_states)
        vb[:, :, length:end].copy_(value_states)
        self.keys, self.values = kb[:, :, :end], vb[:, :, :end]
        return self.keys, self.values


def _is_view_of(view: torch.Tensor, buffer: torch.Tensor) -> bool:
    return (
        view.data_ptr() == buffer.data_ptr() and view.shape[:2] == buffer.shape[:2] and view.stride() == buffer.stride()
    )


def _room_for(cached: torch.Tensor, new: torch.Tensor, room: int) -> torch.Tensor:
    """A [rows, heads, room, dim] buffer that starts with the cached tokens."""
    buffer = new.new_empty((*new.shape[:2], room, new.shape[3]))
    length = cached.shape[-2] if cached.numel() else 0
    if length:
        buffer[:, :, :length].copy_(cached)
    return buffer


def new_cache() -> DynamicCache:
    """An empty cache of RoomyLayers (one is added per layer on its first update)."""
    cache = DynamicCache()
    Cache.__init__(cache, layer_class_to_replicate=RoomyLayer)
    return cache


@dataclass
class BatchKV:
    cache: DynamicCache
    mask: torch.Tensor  # [rows, length] 1 for real tokens, 0 for left padding

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for layer in cache.layers:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor):
            raise RuntimeError("only full-attention KV caches are supported (no sliding or linear layers)")
        out.append((keys, values))
    return out


def _build(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    cache = new_cache()
    for i, (k, v) in enumerate(layers):
        cache.update(k, v, i)
    return cache


def _left_pad(t: torch.Tensor, amount: int) -> torch.Tensor:
    # KV tensors are [rows, heads, length, dim]: pad the length dimension on the left.
    return F.pad(t, (0, 0, amount, 0)) if amount else t


def merge(a: BatchKV | None, b: BatchKV) -> BatchKV:
    if a is None or a.rows == 0:
        return b
    length = max(a.length, b.length)
    pa, pb = length - a.length, length - b.length
    layers = [
        (torch.cat([_left_pad(ka, pa), _left_pad(kb, pb)]), torch.cat([_left_pad(va, pa), _left_pad(vb, pb)]))
        for (ka, va), (kb, vb) in zip(_layers(a.cache), _layers(b.cache), strict=True)
    ]
    mask = torch.cat([F.pad(a.mask, (pa, 0)), F.pad(b.mask, (pb, 0))])
    return BatchKV(_build(layers), mask)


def select(kv: BatchKV, keep: list[int]) -> BatchKV | None:
    """Keep only some rows, then drop leading columns that are padding for every row."""
    if not keep:
        return None
    idx = torch.tensor(keep, device=kv.mask.device)
    mask = kv.mask.index_select(0, idx)
    real = mask.any(dim=0).nonzero()
    start = int(real[0]) if real.numel() else 0
    layers = [
        (k.index_select(0, idx)[:, :, start:], v.index_select(0, idx)[:, :, start:]) for k, v in _layers(kv.cache)
    ]
    return BatchKV(_build(layers), mask[:, start:])
