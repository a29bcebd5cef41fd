"""Python's garbage collector, kept off the tail of serving.

A full collection walks every object the collector tracks: over 400,000 once torch,
transformers and the server are imported, 0.1-0.2 s on a small VM, during which no request
makes progress (the collector holds the GIL). Loading adapters (a promotion) allocates enough
to set one off now and then. What is alive once the engine has started lives as long as the
process, so the server moves it out of the collector's sight (`gc.freeze`, see app.py); later
collections walk only what came after. Each collection's pause is observed in
`saigon_gc_pause_seconds{generation}`, and what was frozen in `saigon_gc_frozen_objects`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class GcPauses:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.histogram = Histogram(
            "saigon_gc_pause_seconds",
            "Python garbage collections by generation (0-2), each a pause of every thread of the process.",
            ["generation"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self._started: float | None = None  # one collection at a time: the collector holds the GIL
        registry.register(_Frozen())

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.histogram.labels(str(info["generation"])).observe(time.perf_counter() - self._started)
            self._started = None

    def context(self) -> Any:
        """For `app.cleanup_ctx`: observes collections while the app runs."""

        async def observing(_: web.Application) -> AsyncIterator[None]:
            gc.callbacks.append(self)
            yield
            gc.callbacks.remove(self)

        return observing


class _Frozen:
    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "saigon_gc_frozen_objects",
            "Objects moved out of the garbage collector's sight once the engine had loaded.",
            value=gc.get_freeze_count(),
        )
