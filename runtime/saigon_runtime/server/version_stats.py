"""Requests, errors and latency per adapter version, for promotion gates.

Prometheus labels stay bounded (no adapter names there); these figures go only to the
agent, through the admin API, for the versions it is asked about. Memory is bounded
too: at most `max_versions` (name, version) pairs, least recently used dropped first,
each with a window of its latest latencies.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field

Key = tuple[str, str]


@dataclass
class _Figures:
    requests: int = 0
    errors: int = 0
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=1024))


@dataclass(frozen=True)
class VersionFigures:
    version: str
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None


class VersionStats:
    def __init__(self, max_versions: int = 4096) -> None:
        self.max_versions = max_versions
        self._figures: OrderedDict[Key, _Figures] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, name: str, version: str, *, ok: bool, latency_s: float | None = None) -> None:
        key = (name, version)
        with self._lock:
            figures = self._figures.get(key)
            if figures is None:
                figures = self._figures[key] = _Figures()
                while len(self._figures) > self.max_versions:
                    self._figures.popitem(last=False)
            else:
                self._figures.move_to_end(key)
            figures.requests += 1
            if not ok:
                figures.errors += 1
            elif latency_s is not None:
                figures.latencies_s.append(latency_s)

    def of(self, name: str) -> list[VersionFigures]:
        with self._lock:
            found = [
                (v, f.requests, f.errors, sorted(f.latencies_s)) for (n, v), f in self._figures.items() if n == name
            ]
        return [
            VersionFigures(version, requests, errors, _quantile_ms(lat, 0.5), _quantile_ms(lat, 0.99))
            for version, requests, errors, lat in sorted(found)
        ]


def _quantile_ms(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index] * 1000.0, 3)
