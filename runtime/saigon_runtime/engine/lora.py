"""Per-row LoRA on top of unchanged base layers (the Punica/S-LoRA idea in portable torch).

Every targeted Linear/Conv1D is wrapped once by `MultiLoraLinear`. Before a forward pass
the engine sets the batch composition (which adapter each row uses); the state then
gathers, once per distinct composition, per-row A/B stacks for each module, and every
layer call adds `bmm(bmm(x, A_rows), B_rows)` to the base output. Rows without an
adapter get zeros, and modules no row targets are skipped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from saigon_runtime.adapters.types import DeviceAdapter, ModuleShape

# Per module for one composition: (A rows, B rows, shrink group or None, rank slice start, end).
# Siblings that read the same input (q/k/v, gate/up) share one shrink matmul over their
# concatenated A rows; each then takes its slice of the result.
LayerWeights = tuple[torch.Tensor, torch.Tensor, str | None, int, int]
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("query", "key", "value"))


class LoraBatchState:
    """The composition of the current forward pass, shared by every wrapped layer."""

    def __init__(
        self, shapes: dict[str, ModuleShape], device: torch.device, dtype: torch.dtype, cache_size: int = 4
    ) -> None:
        self.shapes = shapes
        self.device = device
        self.dtype = dtype
        self.weights: dict[str, LayerWeights] | None = None
        self.fuse_siblings = True
        self.shrink_memo: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._cache: OrderedDict[tuple[int, ...], dict[str, LayerWeights]] = OrderedDict()
        self._cache_size = cache_size
        self._zeros: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._groups = _sibling_groups(shapes)

    def set_rows(self, rows: Sequence[DeviceAdapter | None]) -> None:
        """Select per-row adapters for the next forward pass (None rows use the base)."""
        self.shrink_memo.clear()
        if all(r is None for r in rows):
            self.weights = None
            return
        key = (int(self.fuse_siblings), *(r.serial if r is not None else 0 for r in rows))
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

    def _zero(self, module: str, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = self.shapes[module]
        zkey = (shape.in_features, shape.out_features, rank)
        z = self._zeros.get(zkey)
        if z is None:
            z = (
                torch.zeros(shape.in_features, rank, device=self.device, dtype=self.dtype),
                torch.zeros(rank, shape.out_features, device=self.device, dtype=self.dtype),
            )
            self._zeros[zkey] = z
        return z

    def _gather(self, rows: Sequence[DeviceAdapter | None]) -> dict[str, LayerWeights]:
        pairs = self._gather_pairs(rows)
        out: dict[str, LayerWeights] = {m: (a, b, None, 0, a.shape[2]) for m, (a, b) in pairs.items()}
        if not self.fuse_siblings:
            return out
        for group, members in self._groups.items():
            present = [m for m in members if m in pairs]
            if len(present) < 2:
                continue
            fused = torch.cat([pairs[m][0] for m in present], dim=2)
            start = 0
            for m in present:
                end = start + pairs[m][0].shape[2]
                out[m] = (fused, pairs[m][1], group, start, end)
                start = end
        return out

    def _gather_pairs(self, rows: Sequence[DeviceAdapter | None]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        present = [r for r in rows if r is not None]
        modules = set().union(*(r.modules.keys() for r in present))
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for module in modules:
            rank = max(r.modules[module][0].shape[1] for r in present if module in r.modules)
            a_list, b_list = [], []
            for r in rows:
                pair = r.modules.get(module) if r is not None else None
                if pair is None:
                    pair = self._zero(module, rank)
                elif pair[0].shape[1] < rank:
                    pad = rank - pair[0].shape[1]
                    pair = (
                        torch.nn.functional.pad(pair[0], (0, pad)),
                        torch.nn.functional.pad(pair[1], (0, 0, 0, pad)),
                    )
                a_list.append(pair[0])
                b_list.append(pair[1])
            out[module] = (torch.stack(a_list), torch.stack(b_list))
        return out


class MultiLoraLinear(nn.Module):
    """A base Linear/Conv1D plus the per-row LoRA delta selected by `LoraBatchState`."""

    def __init__(self, base: nn.Module, key: str, state: LoraBatchState) -> None:
        super().__init__()
        self.base = base
        self.lora_key = key
        self._state = [state]  # a list keeps it out of the module tree and state_dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        weights = self._state[0].weights
        if weights is None:
            return out
        entry = weights.get(self.lora_key)
        if entry is None:
            return out
        a, b, group, start, end = entry
        if x.dim() != 3 or x.shape[0] != a.shape[0]:
            raise RuntimeError(f"LoRA batch mismatch in {self.lora_key}: input {tuple(x.shape)}, rows {a.shape[0]}")
        if group is None:
            return out.baddbmm_(torch.bmm(x, a), b)
        memo = self._state[0].shrink_memo
        hit = memo.get(group)
        if hit is None or hit[0] is not x:
            hit = (x, torch.bmm(x, a))
            memo[group] = hit
        return out.baddbmm_(hit[1][..., start:end], b)


def _sibling_groups(shapes: dict[str, ModuleShape]) -> dict[str, tuple[str, ...]]:
    groups: dict[str, tuple[str, ...]] = {}
    for siblings in SIBLINGS:
        parents = {name.rpartition(".")[0] for name in shapes if name.rpartition(".")[2] in siblings}
        for parent in parents:
            members = tuple(f"{parent}.{s}" if parent else s for s in siblings)
            members = tuple(m for m in members if m in shapes)
            if len(members) >= 2 and len({shapes[m].in_features for m in members}) == 1:
                groups[f"{parent}:{siblings[0]}"] = members
    return groups


def lora_targets(model: nn.Module) -> dict[str, ModuleShape]:
    """Every Linear/Conv1D of the model except the output head, with its shape."""
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    shapes: dict[str, ModuleShape] = {}
    for name, module in model.named_modules():
        if module is output:
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
