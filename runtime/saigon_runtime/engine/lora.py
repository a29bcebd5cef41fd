"""Per-row LoRA on top of unchanged base layers (the Punica/S-LoRA idea in portable torch).

Every targeted Linear/Conv1D is wrapped once by `MultiLoraLinear`. Before a forward pass
the engine sets the batch composition (which adapter each row uses); the state then
gathers, once per distinct composition, per-row A/B stacks for each group of rows that
target the same modules, and every layer call adds `bmm(bmm(x, A_rows), B_rows)` to the
base output of those rows. Rows without an adapter, or whose adapter leaves a module out,
are not multiplied at all, and modules no row targets are skipped.

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


@dataclass(frozen=True)
class Segment:
    """Rows of the batch that target the same members of a unit (a module or a sibling group)."""

    key: int  # the shrink memo's key: unique within a composition
    batch: int  # rows in the whole batch
    rows: torch.Tensor | None  # this segment's row indices, or None for every row of the batch
    a: torch.Tensor  # [rows, in, sum of the members' ranks]


@dataclass(frozen=True)
class ModuleDelta:
    """One module's part of a segment: its slice of the shrink result and its B stack."""

    segment: Segment
    start: int
    end: int
    b: torch.Tensor  # [rows, rank, out]


class LoraBatchState:
    """The composition of the current forward pass, shared by every wrapped layer."""

    def __init__(
        self, shapes: dict[str, ModuleShape], device: torch.device, dtype: torch.dtype, cache_size: int = 4
    ) -> None:
        self.shapes = shapes
        self.device = device
        self.dtype = dtype
        self.weights: dict[str, list[ModuleDelta]] | None = None
        self.shrink_memo: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._cache: OrderedDict[tuple[int, ...], dict[str, list[ModuleDelta]]] = OrderedDict()
        self._cache_size = cache_size
        self._units = _units(shapes)

    def set_rows(self, rows: Sequence[DeviceAdapter | None]) -> None:
        """Select per-row adapters for the next forward pass (None rows use the base)."""
        self.shrink_memo.clear()
        if all(r is None for r in rows):
            self.weights = None
            return
        key = tuple(r.serial if r is not None else 0 for r in rows)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._gather(rows)
            self._cache[key] = cached
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        self.weights = cached

    def clear(self) -> None:
        self.weights = None
        self.shrink_memo.clear()
        self._cache.clear()

    def _gather(self, rows: Sequence[DeviceAdapter | None]) -> dict[str, list[ModuleDelta]]:
        out: dict[str, list[ModuleDelta]] = {}
        serials = itertools.count()
        for members in self._units:
            # Rows grouped by which members they target; rows that target none are left out, so a
            # batch that mixes target sets never multiplies by rows of zeros.
            groups: dict[tuple[bool, ...], list[int]] = {}
            for i, r in enumerate(rows):
                if r is not None:
                    signature = tuple(m in r.modules for m in members)
                    if any(signature):
                        groups.setdefault(signature, []).append(i)
            for signature, idx in groups.items():
                present = [m for m, has in zip(members, signature, strict=True) if has]
                adapters = [r for r in (rows[i] for i in idx) if r is not None]
                stacks = {m: _stack(adapters, m) for m in present}
                a = torch.cat([stacks[m][0] for m in present], dim=2)
                index = None if len(idx) == len(rows) else torch.tensor(idx, device=self.device)
                segment = Segment(next(serials), len(rows), index, a)
                start = 0
                for m in present:
                    rank = stacks[m][0].shape[2]
                    out.setdefault(m, []).append(ModuleDelta(segment, start, start + rank, stacks[m][1]))
                    start += rank
        return out


def _stack(adapters: list[DeviceAdapter], module: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row A [rows, in, r] and B [rows, r, out], lower ranks padded with zeros to the largest.

    Padding keeps one matmul per segment: on a CPU each extra small kernel costs more than the
    padded columns (measured; see the grid benchmark)."""
    rank = max(d.modules[module][0].shape[1] for d in adapters)
    a_list, b_list = [], []
    for d in adapters:
        a, b = d.modules[module]
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
        deltas = state.weights.get(self.lora_key)
        if not deltas:
            return out
        rows = deltas[0].segment.batch
        tokens = x.numel() // x.shape[-1] if x.dim() >= 2 else 0
        if tokens == 0 or tokens % rows:
            raise RuntimeError(f"LoRA batch mismatch in {self.lora_key}: input {tuple(x.shape)}, rows {rows}")
        per_row = x.reshape(rows, tokens // rows, x.shape[-1])
        out_rows = out.view(rows, tokens // rows, out.shape[-1])
        memo = state.shrink_memo
        for delta in deltas:
            segment = delta.segment
            hit = memo.get(segment.key)
            if hit is None or hit[0] is not x:
                picked = per_row if segment.rows is None else per_row.index_select(0, segment.rows)
                hit = (x, torch.bmm(picked, segment.a))
                memo[segment.key] = hit
            shrunk = hit[1][..., delta.start : delta.end]
            if segment.rows is None:
                out_rows.baddbmm_(shrunk, delta.b)
            else:
                out_rows.index_add_(0, segment.rows, torch.bmm(shrunk, delta.b))
        return out


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


def wrap_model(model: nn.Module, device: torch.device, dtype: torch.dtype) -> LoraBatchState:
    """Wrap every LoRA target in place; the base weights are not copied or changed."""
    shapes = lora_targets(model)
    state = LoraBatchState(shapes, device, dtype)
    for name in shapes:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, MultiLoraLinear(getattr(parent, child), name, state))
    return state
