"""The background pool: bounded, at a lower CPU priority than the caller, results and errors as to_thread."""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time

import pytest
from saigon_contract.background import BACKGROUND_NICE, BackgroundPool

REQUEST = contextvars.ContextVar("request", default="none")


def thread_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_work_runs_below_the_callers_priority_and_the_caller_keeps_its_own() -> None:
    mine = thread_nice()

    async def scenario() -> tuple[int, int]:
        pool = BackgroundPool(1, "test-bg")
        try:
            return await pool.run(thread_nice), thread_nice()
        finally:
            pool.shutdown()

    theirs, after = asyncio.run(scenario())
    assert theirs == min(19, mine + BACKGROUND_NICE)
    assert after == mine == thread_nice()  # only the pool's threads are lowered, never the process


def test_at_most_workers_calls_run_at_once_and_results_errors_and_context_come_back() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def work(i: int) -> tuple[int, str]:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return i * i, REQUEST.get()

    def fail() -> None:
        raise ValueError("bad adapter")

    async def scenario() -> list[tuple[int, str]]:
        pool = BackgroundPool(2, "test-bg")
        REQUEST.set("r1")
        try:
            results = await asyncio.gather(*(pool.run(work, i) for i in range(6)))
            with pytest.raises(ValueError, match="bad adapter"):
                await pool.run(fail)
            return list(results)
        finally:
            pool.shutdown()

    assert asyncio.run(scenario()) == [(i * i, "r1") for i in range(6)]
    assert peak == 2
