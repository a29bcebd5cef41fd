"""A per-replica read cache kept correct by invalidation messages.

A value read from the database is stored only if no invalidation arrived since the read began
(an epoch counter), so a read racing a write never caches the old value. While the invalidation
channel is down nothing is cached at all: the cache could not learn of other replicas' writes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")
Key = tuple[str, str]


class InvalidatedCache(Generic[V]):
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Key, V] = OrderedDict()
        self._lock = threading.Lock()
        self._epoch = 0
        self._enabled = False
        self.hits = 0
        self.misses = 0

    def get_or_load(self, key: Key, load: Callable[[], V]) -> V:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            self.misses += 1
            epoch, enabled = self._epoch, self._enabled
        value = load()
        if enabled:
            with self._lock:
                if self._enabled and self._epoch == epoch:
                    self._entries[key] = value
                    while len(self._entries) > self.max_entries:
                        self._entries.popitem(last=False)
        return value

    def invalidate(self, key: Key) -> None:
        with self._lock:
            self._epoch += 1
            self._entries.pop(key, None)

    def reset(self, *, enabled: bool) -> None:
        """Drop everything (the channel (re)connected or went down) and cache from now on, or not."""
        with self._lock:
            self._epoch += 1
            self._entries.clear()
            self._enabled = enabled

    def __len__(self) -> int:
        return len(self._entries)
