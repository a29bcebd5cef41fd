"""Per-row LoRA on top of unchanged base layers (the Punica/S-LoRA idea in portable torch).

Every targeted Linear/Conv1D is wrapped once by `MultiLoraLinear`. Before a forward pass
the engine sets the batch composition (which adapter each row uses); the state then plans,
once per distinct composition, each unit (a module, or sibling modules that read the same
input): its targeted rows sorted into segments of rows with the same targets and ranks, and
within those by adapter, so that rows sharing an adapter multiply its weights in one matmul
(the weights are read once, not once per row); and each segment's A/B stacks, one per distinct
adapter. Every layer call then runs one shrink and one expand matmul per segment and adds the
result to the base output of those rows. Rows without an
adapter, or whose adapter leaves a module out, are not multiplied at all; modules no row
targets are skipped; and a low-rank row is never padded to a high rank unless the unit has
more distinct rank sets than `MAX_SEGMENTS`.

Each token takes its row's adapter. A layer may see its input as (batch, seq, hidden) or with
the tokens flattened, (batch * seq, hidden) as OPT's fc1 does: tokens always come in (batch,
seq) order, so any input whose leading dimensions hold rows x tokens is viewed as
(rows, tokens per row, hidden). Inputs that are a routed subset of tokens (mixture-of-experts
experts) cannot be mapped back to rows; those modules are never LoRA targets.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from saigon_runtime.adapters.types import DeviceAdapter, ModuleShape, is_expert_module

# Siblings that read the same input (q/k/v, gate/up) share one shrink matmul over their
# concatenated A rows; each then takes its slice of the result.
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("query", "key", "value"))
# Segments per unit at most: past this, the closest rank sets share a segment, padded to the
# larger ranks, so a batch of many distinct rank patterns does not run one tiny matmul per row.
MAX_SEGMENTS = 6


@dataclass(frozen=True)
class Segment:
    """Consecutive rows of a unit's order that target the same members with the same ranks, made of
    `groups` distinct adapters with the same number of rows each, an adapter's rows together."""

    start: int  # position in the unit's row order
    end: int
    groups: int
    a: torch.Tensor  # [groups, in, sum of the present members' ranks]


@dataclass(frozen=True)
class Unit:
    """One unit's part of a composition: which rows, in which order, and their segments."""

    key: int  # the shrink memo's key: unique within a composition
    batch: int  # rows in the whole batch
    order: torch.Tensor | None  # the unit's rows in segment order; None for every row in batch order
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class ModuleDelta:
    """One module's part of a unit: per segment holding it, its columns of the shrink result and its B
    stack; and where its rows go in the batch."""

    unit: Unit
    parts: tuple[tuple[int, int, int, torch.Tensor], ...]  # (segment index, first column, end column, B)
    rows: torch.Tensor | None  # batch rows of the parts' rows in order; None when the unit's order is None
    nbytes: int


class LoraBatchState:
    """The composition of the current forward pass, shared by every wrapped layer.

    Planned compositions are kept (least recently used first out) within `cache_bytes` of
    gathered stacks, the newest always, so a batch that keeps its composition across decode
    steps gathers once."""

    def __init__(
        self, shapes: dict[str, ModuleShape], device: torch.device, dtype: torch.dtype, cache_bytes: int | None = None
    ) -> None:
        self.shapes = shapes
        self.device = device
        self.dtype = dtype
        self.weights: dict[str, ModuleDelta] | None = None
        self.shrink_memo: dict[int, tuple[torch.Tensor, list[torch.Tensor]]] = {}
        self._cache: OrderedDict[tuple[int, ...], tuple[dict[str, ModuleDelta], int]] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached_bytes = 0
        self._units = _units(shapes)

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes

    def set_rows(self, rows: Sequence[DeviceAdapter | None]) -> None:
        """Select per-row adapters for the next forward pass (None rows use the base)."""
        self.shrink_memo.clear()
        if all(r is None for r in rows):
            self.weights = None
            return
        key = tuple(r.serial if r is not None else 0 for r in rows)
        hit = self._cache.get(key)
        if hit is None:
            weights = self._plan(rows)
            size = sum(d.nbytes for d in weights.values())
            self._cache[key] = (weights, size)
            self._cached_bytes += size
            while len(self._cache) > 1 and self._cache_bytes is not None and self._cached_bytes > self._cache_bytes:
                self._cached_bytes -= self._cache.popitem(last=False)[1][1]
        else:
            self._cache.move_to_end(key)
            weights = hit[0]
        self.weights = weights

    def clear(self) -> None:
        self.weights = None
        self.shrink_memo.clear()
        self._cache.clear()
        self._cached_bytes = 0

    def _plan(self, rows: Sequence[DeviceAdapter | None]) -> dict[str, ModuleDelta]:
        out: dict[str, ModuleDelta] = {}
        keys = itertools.count()
        for members in self._units:
            # Each targeting row's ranks per member (0: it leaves that member out).
            ranks: dict[int, tuple[int, ...]] = {}
            for i, r in enumerate(rows):
                if r is not None:
                    shape = tuple(r.modules[m][0].shape[1] if m in r.modules else 0 for m in members)
                    if any(shape):
                        ranks[i] = shape
            if not ranks:
                continue
            groups = [(bucket, shared) for bucket in _buckets(ranks) for shared in _by_adapter(bucket.rows, rows)]
            order = [i for _, shared in groups for same in shared for i in same]
            identity = order == list(range(len(rows)))
            segments: list[Segment] = []
            members_parts: dict[str, list[tuple[int, int, int, torch.Tensor]]] = {m: [] for m in members}
            member_rows: dict[str, list[int]] = {m: [] for m in members}
            start = 0
            for s, (bucket, shared) in enumerate(groups):
                adapters = [r for r in (rows[same[0]] for same in shared) if r is not None]
                segment_rows = [i for same in shared for i in same]
                a_parts, column = [], 0
                for m, rank in zip(members, bucket.ranks, strict=True):
                    if rank == 0:
                        continue
                    a, b = _stack(adapters, m, rank)
                    a_parts.append(a)
                    members_parts[m].append((s, column, column + rank, b))
                    member_rows[m].extend(segment_rows)
                    column += rank
                end = start + len(segment_rows)
                segments.append(Segment(start, end, len(shared), torch.cat(a_parts, dim=2)))
                start = end
            index = None if identity else torch.tensor(order, device=self.device)
            unit = Unit(next(keys), len(rows), index, tuple(segments))
            a_bytes = sum(_bytes(seg.a) for seg in segments)
            for m in members:
                if members_parts[m]:
                    where = None if identity else torch.tensor(member_rows[m], device=self.device)
                    nbytes = sum(_bytes(part[3]) for part in members_parts[m]) + a_bytes
                    out[m] = ModuleDelta(unit, tuple(members_parts[m]), where, nbytes)
                    a_bytes = 0  # counted once per unit
        return out


@dataclass(frozen=True)
class _Bucket:
    rows: list[int]
    ranks: tuple[int, ...]  # per member, the largest among the rows (0: no row targets it)


def _buckets(ranks: dict[int, tuple[int, ...]]) -> list[_Bucket]:
    """Rows grouped by their ranks per member; past MAX_SEGMENTS groups, the two neighbours whose
    union pads the fewest weights merge, repeatedly."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, shape in ranks.items():
        groups.setdefault(shape, []).append(i)
    # Sorted by which members are targeted, then by rank: neighbours are the cheapest to merge.
    buckets = [_Bucket(rows, shape) for shape, rows in sorted(groups.items(), key=lambda g: (
        tuple(r == 0 for r in g[0]), g[0]))]  # fmt: skip
    while len(buckets) > MAX_SEGMENTS:
        costs = [_merge_cost(buckets[j], buckets[j + 1]) for j in range(len(buckets) - 1)]
        j = costs.index(min(costs))
        first, second = buckets[j], buckets[j + 1]
        merged = _Bucket(first.rows + second.rows, tuple(map(max, first.ranks, second.ranks)))
        buckets[j : j + 2] = [merged]
    return buckets


def _by_adapter(bucket_rows: list[int], rows: Sequence[DeviceAdapter | None]) -> list[list[list[int]]]:
    """A bucket's rows by adapter, in groups of adapters that hold the same number of rows (so each
    group is one batched matmul over its distinct adapters, with no padding)."""
    same: dict[int, list[int]] = {}
    for i in bucket_rows:
        row = rows[i]
        same.setdefault(row.serial if row is not None else 0, []).append(i)
    by_count: dict[int, list[list[int]]] = {}
    for members in same.values():
        by_count.setdefault(len(members), []).append(members)
    return [by_count[count] for count in sorted(by_count)]


def _merge_cost(first: _Bucket, second: _Bucket) -> int:
    union = tuple(map(max, first.ranks, second.ranks))
    return len(first.rows) * (sum(union) - sum(first.ranks)) + len(second.rows) * (sum(union) - sum(second.ranks))


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _stack(adapters: list[DeviceAdapter], module: str, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row A [rows, in, rank] and B [rows, rank, out]; rows of a lower rank (in a merged segment)
    or that leave the module out are padded with zeros."""
    shape = None
    a_list, b_list = [], []
    for d in adapters:
        pair = d.modules.get(module)
        if pair is None:
            if shape is None:
                shape = next(p for p in (x.modules.get(module) for x in adapters) if p is not None)
            a_list.append(shape[0].new_zeros((shape[0].shape[0], rank)))
            b_list.append(shape[1].new_zeros((rank, shape[1].shape[1])))
            continue
        a, b = pair
        pad = rank - a.shape[1]
        a_list.append(torch.nn.functional.pad(a, (0, pad)) if pad else a)
        b_list.append(torch.nn.functional.pad(b, (0, 0, 0, pad)) if pad else b)
    return torch.stack(a_list), torch.stack(b_list)


class MultiLoraLinear(nn.Module):
    """A base Linear/Conv1D plus the per-row LoRA delta selected by `LoraBatchState`."""

    def __init__(self, base: nn.Module, key: str, state: LoraBatchState) -> None:
        super().__init__()
        self.base = base
        self.lora_key = key
        self._state = [state]  # a list keeps it out of the module tree and state_dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        state = self._state[0]
        if state.weights is None:
            return out
        delta = state.weights.get(self.lora_key)
        if delta is None:
            return out
        unit = delta.unit
        rows = unit.batch
        tokens = x.numel() // x.shape[-1] if x.dim() >= 2 else 0
        if tokens == 0 or tokens % rows:
            raise RuntimeError(f"LoRA batch mismatch in {self.lora_key}: input {tuple(x.shape)}, rows {rows}")
        per_row = x.reshape(rows, tokens // rows, x.shape[-1])
        out_rows = out.view(rows, tokens // rows, out.shape[-1])
        hit = state.shrink_memo.get(unit.key)
        if hit is None or hit[0] is not x:
            picked = per_row if unit.order is None else per_row.index_select(0, unit.order)
            segments = unit.segments
            hit = (x, [torch.bmm(_grouped_input(picked[seg.start : seg.end], seg.groups), seg.a) for seg in segments])
            state.shrink_memo[unit.key] = hit
        shrunk = hit[1]
        if delta.rows is None:  # the unit's rows are the batch's, in order: add in place
            for s, first, end, b in delta.parts:
                seg = unit.segments[s]
                _grouped(out_rows[seg.start : seg.end], seg.groups).baddbmm_(shrunk[s][..., first:end], b)
            return out
        expanded = out_rows.new_empty((len(delta.rows), out_rows.shape[1], out_rows.shape[2]))
        at = 0
        for s, first, end, b in delta.parts:
            seg = unit.segments[s]
            count = seg.end - seg.start
            torch.bmm(shrunk[s][..., first:end], b, out=_grouped(expanded[at : at + count], seg.groups))
            at += count
        out_rows.index_add_(0, delta.rows, expanded)
        return out


def _grouped(rows: torch.Tensor, groups: int) -> torch.Tensor:
    """[rows, tokens, features] as [groups, rows per group x tokens, features], an adapter's rows being
    consecutive: a view, so what is written to it lands in `rows`."""
    return rows.view(groups, -1, rows.shape[-1])


def _grouped_input(rows: torch.Tensor, groups: int) -> torch.Tensor:
    """The same shape for an input, copied where its strides allow no view."""
    return rows.reshape(groups, -1, rows.shape[-1])


def _units(shapes: dict[str, ModuleShape]) -> list[tuple[str, ...]]:
    """Sibling groups that share a shrink matmul, then every other module on its own."""
    units: list[tuple[str, ...]] = []
    for siblings in SIBLINGS:
        parents = {name.rpartition(".")[0] for name in shapes if name.rpartition(".")[2] in siblings}
        for parent in sorted(parents):
            members = tuple(f"{parent}.{s}" if parent else s for s in siblings)
            members = tuple(m for m in members if m in shapes)
            if len(members) >= 2 and len({shapes[m].in_features for m in members}) == 1:
                units.append(members)
    grouped = {m for unit in units for m in unit}
    return units + [(m,) for m in shapes if m not in grouped]


def lora_targets(model: nn.Module) -> dict[str, ModuleShape]:
    """Every Linear/Conv1D of the model except the output head and MoE experts, with its shape."""
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    shapes: dict[str, ModuleShape] = {}
    for name, module in model.named_modules():
        if module is output or is_expert_module(name):
            continue
        if isinstance(module, nn.Linear):
            shapes[name] = ModuleShape(module.in_features, module.out_features)
        elif isinstance(module, Conv1D):
            shapes[name] = ModuleShape(module.weight.shape[0], module.nf)
    return shapes


def wrap_model(
    model: nn.Module, device: torch.device, dtype: torch.dtype, cache_bytes: int | None = None
) -> LoraBatchState:
    """Wrap every LoRA target in place; the base weights are not copied or changed."""
    shapes = lora_targets(model)
    state = LoraBatchState(shapes, device, dtype, cache_bytes)
    for name in shapes:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, MultiLoraLinear(getattr(parent, child), name, state))
    return state
