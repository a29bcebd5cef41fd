"""Prometheus metrics on a registry of the app's own (so several apps in one process stay apart).

Labels are bounded: `route` is the route table's name, `scope` is user/domain/global/named/base,
`tier` is device/host; never a user id, adapter name or path. Engine and adapter-cache figures
are read from `Engine.stats()` at scrape time by a collector, so they cannot drift from the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from saigon_runtime.server.gc_pauses import GcPauses

SCOPES = ("user", "domain", "global", "named", "base")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    def __init__(self, stats_source: Callable[[], Any | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "saigon_http_requests",
            "HTTP requests answered, by route and status code.",
            ["route", "method", "code"],
            registry=r,
        )
        self.http_duration = Histogram(
            "saigon_http_request_duration_seconds",
            "Time to answer an HTTP request, streams included.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.http_in_flight = Gauge("saigon_http_requests_in_flight", "HTTP requests being answered.", registry=r)
        self.request_latency = Histogram(
            "saigon_request_latency_seconds",
            "Generation latency from submission to the last token.",
            ["scope"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "saigon_time_to_first_token_seconds",
            "Time from submission to the first generated token.",
            ["scope"],
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter("saigon_prompt_tokens", "Prompt tokens processed.", ["scope"], registry=r)
        self.generation_tokens = Counter("saigon_generation_tokens", "Tokens generated.", ["scope"], registry=r)
        self.generations = Counter(
            "saigon_generations",
            "Generations finished, by adapter scope and finish reason.",
            ["scope", "finish_reason"],
            registry=r,
        )
        self.rejections = Counter(
            "saigon_rejected_requests", "Requests refused before generation, by reason.", ["reason"], registry=r
        )
        self.batch_size = Histogram(
            "saigon_batch_size", "Requests in each engine step.", buckets=_BATCH_BUCKETS, registry=r
        )
        r.register(EngineCollector(stats_source))
        self.gc_pauses = GcPauses(r)

    def observe_step(self, batch_size: int, queue_depth: int) -> None:
        """Engine step observer (called on the engine thread; prometheus-client is thread-safe)."""
        self.batch_size.observe(batch_size)

    def observe_generation(
        self,
        scope: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        latency_s: float,
        ttft_s: float | None,
        finish_reason: str,
    ) -> None:
        self.prompt_tokens.labels(scope).inc(prompt_tokens)
        self.generation_tokens.labels(scope).inc(completion_tokens)
        self.request_latency.labels(scope).observe(latency_s)
        if ttft_s is not None:
            self.ttft.labels(scope).observe(ttft_s)
        self.generations.labels(scope, finish_reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class EngineCollector(Collector):
    """Engine and adapter-cache figures, read from `Engine.stats()` when scraped."""

    def __init__(self, stats_source: Callable[[], Any | None]) -> None:
        self._stats_source = stats_source

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        stats = self._stats_source()
        loaded = GaugeMetricFamily("saigon_engine_ready", "1 when the base model is loaded and serving.")
        loaded.add_metric([], 0.0 if stats is None else 1.0)
        yield loaded
        if stats is None:
            return
        cache = stats.cache
        yield _gauge("saigon_queue_depth", "Requests waiting for a place in the batch.", stats.queue_depth)
        yield _gauge("saigon_running_requests", "Requests in the running batch.", stats.running)
        yield _gauge("saigon_last_batch_size", "Requests in the latest engine step.", stats.last_batch_size)
        yield _counter("saigon_engine_steps", "Engine forward steps.", stats.steps)
        yield _gauge(
            "saigon_device_memory_bytes", "Accelerator memory allocated by the engine.", stats.device_memory_bytes
        )
        yield _counter("saigon_adapter_cache_hits", "Adapter lookups served from a resident copy.", cache.hits)
        yield _counter("saigon_adapter_cache_misses", "Adapter lookups that had to load.", cache.misses)
        yield _counter("saigon_adapter_loads", "Adapters loaded from disk.", cache.loads)
        yield _counter("saigon_adapter_evictions", "Adapters evicted from a cache tier.", cache.evictions)
        yield _counter("saigon_adapter_load_seconds", "Time spent loading adapters.", cache.load_seconds_total)
        yield _counter(
            "saigon_adapter_rejections", "Adapter versions refused (corrupt, unsafe or not fitting).", cache.rejections
        )
        resident = GaugeMetricFamily("saigon_adapters_resident", "Adapters resident, by tier.", labels=["tier"])
        resident.add_metric(["device"], cache.resident_device)
        resident.add_metric(["host"], cache.resident_host)
        yield resident
        capacity = GaugeMetricFamily("saigon_adapter_slots", "Adapter capacity, by tier.", labels=["tier"])
        capacity.add_metric(["device"], cache.max_loras)
        capacity.add_metric(["host"], cache.max_cpu_loras)
        yield capacity


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=float(value))
