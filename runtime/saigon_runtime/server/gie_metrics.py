"""Gauges for the Gateway API Inference Extension's endpoint picker, under vLLM's names, and a
per-adapter residency gauge. Opt-in (SAIGON_GIE_METRICS): adapter names become label values.

The picker reads queued and running requests, KV-cache usage and `vllm:lora_requests_info`
(running and waiting adapters, max_lora; the value is a timestamp) to prefer a replica that
already holds a request's adapter. Saigon's KV cache is not paged: its usage is the share of
batch rows in use (max_batch_size is what fills first).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from saigon_runtime.engine.engine import Engine, EngineStats


class GieCollector(Collector):
    def __init__(self, engine_source: Callable[[], Engine | None]) -> None:
        self._engine_source = engine_source

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        engine = self._engine_source()
        if engine is None:
            return
        stats = engine.stats()
        model = [engine.model_id]
        for name, doc, value in (
            ("vllm:num_requests_running", "Requests in the running batch.", stats.running),
            ("vllm:num_requests_waiting", "Requests waiting for a place in the batch.", stats.queue_depth),
            ("vllm:kv_cache_usage_perc", "Share of batch rows in use (1 is full).", _usage(stats)),
            ("vllm:gpu_cache_usage_perc", "Share of batch rows in use (the older name).", _usage(stats)),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=["model_name"])
            gauge.add_metric(model, float(value))
            yield gauge
        running = engine.adapters.pool.in_use_names()
        waiting = sorted(engine.waiting_adapters() - set(running))
        info = GaugeMetricFamily(
            "vllm:lora_requests_info",
            "Adapters of running and waiting requests; the value is when this was read.",
            labels=["max_lora", "running_lora_adapters", "waiting_lora_adapters"],
        )
        info.add_metric([str(stats.cache.max_loras), ",".join(running), ",".join(waiting)], time.time())
        yield info
        resident = GaugeMetricFamily(
            "saigon_adapter_residency",
            "1 for each adapter version resident on the device, busy or idle.",
            labels=["adapter", "version"],
        )
        for name, version in engine.adapters.pool.resident():
            resident.add_metric([name, version], 1.0)
        yield resident


def _usage(stats: EngineStats) -> float:
    return min(1.0, stats.running / stats.max_batch_size) if stats.max_batch_size else 0.0
