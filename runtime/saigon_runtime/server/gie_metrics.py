"""Gauges for the Gateway API Inference Extension's endpoint picker, under vLLM's names, and a
per-adapter residency gauge. Opt-in (SAIGON_GIE_METRICS). Adapter names become label values with
the user id of a `user_<id>` adapter as a keyed digest (saigon_runtime.redact), and lists bounded
by the slot count, so labels carry no user id and stay bounded; shared adapters keep their names,
which is what the picker's affinity needs most (a user's own adapter follows the user through
the HAProxy router's hashing instead).

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

from saigon_runtime.redact import shown

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
        running = engine.adapters.pool.in_use_names()  # at most max_loras: one slot each
        # Waiting requests may name any number of adapters: the list stays as long as the slots.
        waiting = sorted(engine.waiting_adapters() - set(running))[: stats.cache.max_loras]
        info = GaugeMetricFamily(
            "vllm:lora_requests_info",
            "Adapters of running and waiting requests; the value is when this was read.",
            labels=["max_lora", "running_lora_adapters", "waiting_lora_adapters"],
        )
        info.add_metric([str(stats.cache.max_loras), _names(running), _names(waiting)], time.time())
        yield info
        resident = GaugeMetricFamily(
            "saigon_adapter_residency",
            "1 for each adapter version resident on the device, busy or idle.",
            labels=["adapter", "version"],
        )
        for name, version in engine.adapters.pool.resident():
            resident.add_metric([shown(name), version], 1.0)
        yield resident


def _names(adapters: list[str]) -> str:
    return ",".join(shown(name) for name in adapters)


def _usage(stats: EngineStats) -> float:
    return min(1.0, stats.running / stats.max_batch_size) if stats.max_batch_size else 0.0
