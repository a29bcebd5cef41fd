"""A keyed work queue for asyncio: the operator's status writer and the agent's syncer both run on it.

`mark(key)` asks for `work(key)` to run. Marks coalesce: a key waiting to start runs once,
and a key marked while its work runs runs once more afterwards (after the delay again),
never twice at a time.
`mark_later(key, delay_s)` marks it after a delay (one timer per key: backoff, rechecks);
a `mark` in the meantime runs it now and drops the timer.
With a `limit`, at most that many keys run (or wait out their delay) at once; the others wait
their turn in the order they were marked, as keys only (no task each).

The queue belongs to the event loop it was made in (or first marked from); `mark`,
`mark_later` and `forget` may be called from other threads (kopf runs synchronous
handlers in a thread pool) and take effect on that loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
log = logging.getLogger(__name__)


class KeyedQueue(Generic[K]):
    def __init__(
        self,
        work: Callable[[K], Awaitable[None]],
        *,
        delay_s: float = 0.0,
        name: str = "work",
        limit: int | None = None,
    ) -> None:
        """`delay_s`: how long a marked key waits before its work starts, gathering further marks."""
        if limit is not None and limit < 1:
            raise ValueError(f"{name}: limit must be at least 1, not {limit}")
        self._work = work
        self.delay_s = delay_s
        self.name = name
        self.limit = limit
        self._tasks: dict[K, asyncio.Task[None]] = {}
        self._waiting: dict[K, None] = {}  # marked, waiting for one of `limit` turns (an ordered set)
        self._again: set[K] = set()
        self._started: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = _running_loop()

    def _elsewhere(self, call: Callable[..., None], *args: object) -> bool:
        """True when called off the queue's loop: `call(*args)` then runs on it instead."""
        here = _running_loop()
        if self._loop is None:
            if here is None:
                raise RuntimeError(f"{self.name}: no event loop to run on")
            self._loop = here
        if here is self._loop:
            return False
        self._loop.call_soon_threadsafe(call, *args)
        return True

    def mark(self, key: K) -> None:
        if self._elsewhere(self.mark, key):
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        task = self._tasks.get(key)
        if task is not None and not task.done():
            if key in self._started:
                self._again.add(key)
            return
        if key in self._waiting:
            return
        if self.limit is not None and len(self._tasks) >= self.limit:
            self._waiting[key] = None
            return
        self._start(key)

    def _start(self, key: K) -> None:
        self._tasks[key] = asyncio.create_task(self._run(key), name=f"{self.name}-{key}")

    def _start_waiting(self) -> None:
        while self._waiting and (self.limit is None or len(self._tasks) < self.limit):
            key = next(iter(self._waiting))
            del self._waiting[key]
            self._start(key)

    @property
    def waiting(self) -> int:
        """Keys marked and not yet started (for lack of a turn)."""
        return len(self._waiting)

    def mark_later(self, key: K, delay_s: float) -> None:
        if self._elsewhere(self.mark_later, key, delay_s):
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        assert self._loop is not None
        self._timers[key] = self._loop.call_later(delay_s, self._fire, key)

    def forget(self, key: K) -> None:
        """Drops a pending timer and a queued rerun (work already running finishes)."""
        if self._elsewhere(self.forget, key):
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._again.discard(key)
        self._waiting.pop(key, None)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.mark(key)

    async def _run(self, key: K) -> None:
        try:
            if self.delay_s > 0:
                await asyncio.sleep(self.delay_s)
            while True:
                self._started.add(key)
                self._again.discard(key)
                try:
                    await self._work(key)
                except Exception:  # a bug in one key's work must not stop the others
                    log.exception("%s: unexpected error", self.name)
                if key not in self._again:
                    break
                if self.delay_s > 0:
                    # Marked while it ran: the rerun waits the delay too, so a key marked without
                    # pause (a model's status during a bulk apply) runs once per delay, not back to back.
                    await asyncio.sleep(self.delay_s)
        finally:
            self._started.discard(key)
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]
            self._start_waiting()

    async def idle(self) -> None:
        """Returns once no work runs or waits to start (timers aside)."""
        while running := [t for t in self._tasks.values() if not t.done()]:  # waiting keys start as these end
            await asyncio.gather(*running, return_exceptions=True)

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._waiting.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
