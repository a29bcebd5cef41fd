"""Worker threads for work that must not compete with serving: fetching, unpacking, hashing,
fsyncing and loading adapters.

A bounded pool whose threads run at a lower CPU priority (a higher nice value: per thread on
Linux), so a bulk apply or a promotion takes a little longer instead of the requests being
served meanwhile. Callers await `run(fn, *args)` as they would `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
BACKGROUND_NICE = 10


def lower_this_thread(nice: int = BACKGROUND_NICE) -> bool:
    """Raises the calling thread's nice value by `nice` (not the process's: Linux schedules threads);
    False where that is not possible, and the thread keeps its priority. Only for threads that hold
    no lock the serving path takes: a starved low-priority holder would stall requests."""
    if nice <= 0:
        return True
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + nice))
    except (OSError, AttributeError):
        return False
    return True


class BackgroundPool:
    def __init__(self, workers: int, name: str, *, nice: int = BACKGROUND_NICE) -> None:
        self.workers = max(1, workers)
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix=name, initializer=lower_this_thread, initargs=(nice,)
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def shutdown(self) -> None:
        """Queued calls are dropped; a running one finishes in its thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)
