"""Sizing the device tier from a memory budget, as vLLM's `gpu_memory_utilization` does.

The runtime may use `memory_utilization` of the device's memory (host memory, within the
pod's cgroup limit, on the CPU). What the loaded model already uses and a reserve for the
running batch (its KV cache and its gathered per-row LoRA stacks) come off first; the rest
holds adapters, counted in bytes, so the ranks actually present decide how many fit.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from saigon_runtime.adapters.format import ModuleShape

log = logging.getLogger(__name__)
CGROUP_LIMIT = Path("/sys/fs/cgroup/memory.max")
RESERVE_CONTEXT = 2048  # tokens per row the KV reserve plans for
NOMINAL_RANK = 16  # the rank the reported slot count assumes until adapters are resident
COMPOSITIONS = 4  # full batch compositions that LoraBatchState's byte bound holds


@dataclass(frozen=True)
class MemoryPlan:
    total: int  # bytes the device (or host) has
    in_use: int  # bytes in use once the model is loaded
    reserve: int  # bytes kept for the running batch
    adapter_budget: int  # bytes for resident adapters
    bytes_per_rank: int  # one adapter on every target, per unit of rank

    def describe(self) -> str:
        mib = 2**20
        return (
            f"adapter budget {self.adapter_budget / mib:.0f} MiB of {self.total / mib:.0f} MiB "
            f"(model and runtime {self.in_use / mib:.0f} MiB, batch reserve {self.reserve / mib:.0f} MiB); "
            f"about {self.adapter_budget // max(1, self.bytes_per_rank * NOMINAL_RANK)} adapters of rank {NOMINAL_RANK}"
        )


def plan_adapter_memory(
    model: nn.Module,
    shapes: dict[str, ModuleShape],
    device: torch.device,
    dtype: torch.dtype,
    *,
    utilization: float,
    max_batch_size: int,
    max_rank: int,
) -> MemoryPlan:
    if not 0.0 < utilization <= 1.0:
        raise ValueError(f"memory_utilization must be in (0, 1], not {utilization}")
    element = torch.empty((), dtype=dtype).element_size()
    bytes_per_rank = _bytes_per_rank(shapes, dtype)
    total, in_use = _device_memory(device)
    stacks = composition_cache_bytes(shapes, dtype, max_batch_size=max_batch_size, max_rank=max_rank)
    reserve = _kv_bytes(model, max_batch_size, element) + stacks
    budget = int(total * utilization) - in_use - reserve
    floor = bytes_per_rank * max_rank  # always room for one adapter of the largest rank
    if budget < floor:
        log.warning(
            "memory_utilization %.2f leaves %d MiB for adapters; using room for one adapter of rank %d",
            utilization, budget // 2**20, max_rank,
        )  # fmt: skip
        budget = floor
    return MemoryPlan(total, in_use, reserve, budget, bytes_per_rank)


def composition_cache_bytes(
    shapes: dict[str, ModuleShape], dtype: torch.dtype, *, max_batch_size: int, max_rank: int
) -> int:
    """The byte bound on gathered per-row stacks (LoraBatchState's cache of batch compositions):
    COMPOSITIONS batches whose every row holds an adapter of max_rank on every target."""
    return COMPOSITIONS * max_batch_size * max_rank * _bytes_per_rank(shapes, dtype)


def _bytes_per_rank(shapes: dict[str, ModuleShape], dtype: torch.dtype) -> int:
    element = torch.empty((), dtype=dtype).element_size()
    return sum(s.in_features + s.out_features for s in shapes.values()) * element


def _device_memory(device: torch.device) -> tuple[int, int]:
    if device.type == "cuda":
        _, total = torch.cuda.mem_get_info(device)
        return int(total), int(torch.cuda.memory_reserved(device))
    return _host_total(), _resident_bytes()


def _host_total() -> int:
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = CGROUP_LIMIT.read_text().strip()
    except OSError:
        return physical
    return min(physical, int(limit)) if limit.isdigit() else physical


def _resident_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _kv_bytes(model: nn.Module, rows: int, element: int) -> int:
    config = getattr(model, "config", None)
    text = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    layers = int(getattr(text, "num_hidden_layers", 0) or 0)
    hidden = int(getattr(text, "hidden_size", 0) or 0)
    context = min(RESERVE_CONTEXT, int(getattr(text, "max_position_embeddings", RESERVE_CONTEXT) or RESERVE_CONTEXT))
    # Keys and values of full width: an upper bound for grouped-query attention.
    return rows * context * layers * 2 * hidden * element
