"""What a benchmark ran on, in one line: plots print it under the figure, JSON reports keep it."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.partition(":")[2].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: str = "cpu") -> str:
    """e.g. "NVIDIA H200 (140 GiB); AMD EPYC 9654 96-Core Processor, 16 cores available; torch 2.11.0"."""
    parts = []
    try:
        import torch
    except ImportError:  # the routing benchmark's parent process needs no torch
        torch = None  # type: ignore[assignment]
    if torch is not None and device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        memory_gib = torch.cuda.get_device_properties(index).total_memory / 2**30
        parts.append(f"{torch.cuda.get_device_name(index)} ({memory_gib:.0f} GiB)")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts.append(f"{_cpu_model()}, {cores} cores available")
    if torch is not None:
        from saigon_runtime.engine.threads import engine_threads

        parts.append(f"torch {torch.__version__.split('+')[0]}, {engine_threads()} engine threads")
    return "; ".join(parts)
