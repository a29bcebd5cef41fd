"""One multi-threaded torch thread per process: the engine's.

libgomp lets the workers of a parallel region spin for the next one only while the process's
OpenMP threads fit the CPUs. Once another thread (the event loop's, an adapter loader's, a
benchmark's) has run one multi-threaded op, its team stays and the process has more OpenMP
threads than CPUs; from then on every parallel region of the engine wakes its workers through
the kernel. On 2 cores that made each small LoRA matmul 4-8x slower (130 us instead of 10 us)
and halved the throughput of a batch of mixed adapters. So the engine's thread runs torch on
`engine_threads()` threads and every other thread on one.

torch keeps the OpenMP thread count per thread, and a thread takes the last count any thread
set when it first runs a parallel op, even over a count it set itself before; so each side
settles its count with an op at once, and `hand_over` leaves one as the default for every thread
to come once the engine thread has taken its own.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch

CGROUP_CPU = Path("/sys/fs/cgroup/cpu.max")


@functools.cache
def engine_threads() -> int:
    """Threads for the engine: torch's default (OMP_NUM_THREADS, else the CPUs this process may run
    on) within the container's CPU quota, read once, before any thread count here changes it."""
    default, quota = torch.get_num_threads(), cpu_quota()
    return max(1, min(default, quota) if quota else default)


def cpu_quota(path: Path = CGROUP_CPU) -> int | None:
    """Whole CPUs of the cgroup v2 quota (`cpu.max`, rounded up), or None without one."""
    try:
        quota, period = path.read_text().split()[:2]
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def take_engine_threads() -> None:
    """Run on the engine's thread before its first op."""
    _settle(engine_threads())


def hand_over() -> None:
    """Run on any other thread before it loads or builds a model, and again once the engine's thread
    has taken its count: this thread, and every thread that has not run a parallel op yet, runs
    torch on one thread."""
    engine_threads()  # read before the first change
    _settle(1)


def _settle(count: int) -> None:
    torch.set_num_threads(count)
    torch.ones(1 << 16).sum()  # a parallel op: the thread takes its count now, not at its first op
