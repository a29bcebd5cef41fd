"""A progress watchdog for /healthz: work is waiting and no handler has finished for too long.

The operator's informer notices each SaigonAdapter generation; a handler that finishes
with it (whatever its outcome: a failure is kopf's to retry) settles it. An operator
whose handlers stop running (a stuck kopf queue, a deadlock) then fails its liveness
probe instead of answering 200 forever, while one working through a long backlog stays
healthy because its handlers keep finishing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

Key = tuple[str, str]  # (namespace, name)


class Progress:
    def __init__(self, stall_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_after_s = stall_after_s
        self._clock = clock
        self._pending: dict[Key, tuple[int, float]] = {}  # generation waiting, since when
        self._handled: dict[Key, int] = {}  # the newest generation a handler finished with
        self._last_finished = clock()  # a fresh process gets the full grace period

    def noticed(self, key: Key, generation: int | None) -> None:
        generation = generation or 0
        if self._handled.get(key, -1) >= generation:
            return
        since = self._pending.get(key, (0, self._clock()))[1]
        self._pending[key] = (generation, since)

    def finished(self, key: Key, generation: int | None) -> None:
        generation = generation or 0
        self._last_finished = self._clock()
        self._handled[key] = max(generation, self._handled.get(key, -1))
        pending = self._pending.get(key)
        if pending is not None and pending[0] <= generation:
            del self._pending[key]

    def forget(self, key: Key) -> None:
        self._pending.pop(key, None)
        self._handled.pop(key, None)

    def retain(self, namespace: str | None, present: Collection[Key]) -> None:
        """After a relist: forgets the objects (of `namespace`, or all) that no longer exist."""
        for key in [k for k in {*self._pending, *self._handled} if namespace in (None, k[0]) and k not in present]:
            self.forget(key)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def stalled(self) -> str | None:
        """Why the operator is stuck, or None while it makes progress (or has nothing to do)."""
        if not self._pending:
            return None
        now = self._clock()
        oldest = min(since for _, since in self._pending.values())
        idle = now - self._last_finished
        if now - oldest > self.stall_after_s and idle > self.stall_after_s:
            return f"{len(self._pending)} objects wait, and no handler has finished for {idle:.0f}s"
        return None
