"""The running batch's KV cache: left-padded rows that can be merged, filtered and trimmed.

New requests are prefilled on their own, then merged into the running batch by padding
the shorter side on the left; finished rows are dropped with an index select.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache


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
    cache = DynamicCache()
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
