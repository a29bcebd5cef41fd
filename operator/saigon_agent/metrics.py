"""The agent's Prometheus metrics, served on its health port at /metrics.

Labels are bounded: source kinds, results (a SyncError's CamelCase reason) and states. Adapter
names carry user ids (`user_<id>`), so they become an `adapter` label only when the SaigonModel
opts in (spec.agent.metricsAdapterLabels). Each agent has its own registry (tests run several
agents in one process).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from saigon_contract.reports import State

OK = "ok"
# The refusals that mean the bytes were not what the SaigonAdapter promised.
VERIFICATION_REASONS = frozenset({"DigestMismatch", "InvalidArtifact", "ArtifactTooLarge", "VersionConflict"})
SYNC_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class AgentMetrics:
    def __init__(self, *, adapter_labels: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.adapter_labels = adapter_labels
        per_adapter = ("adapter",) if adapter_labels else ()
        self._downloads = Counter(
            "saigon_agent_downloads_total",
            "Adapter artifacts fetched into this pod, by source kind and result (ok, or the failure's reason)",
            ["source", "result", *per_adapter],
            registry=self.registry,
        )
        self._bytes = Counter(
            "saigon_agent_download_bytes_total",
            "Bytes of adapter artifacts fetched over the network (https, s3, huggingFace)",
            ["source"],
            registry=self.registry,
        )
        self._verification = Counter(
            "saigon_agent_verification_failures_total",
            "Artifacts refused after fetching: sha256 mismatch, invalid files, over the size limit, version conflict",
            ["reason", *per_adapter],
            registry=self.registry,
        )
        self._sync = Histogram(
            "saigon_agent_sync_duration_seconds",
            "From starting to converge an adapter onto its target to serving it (ok) or failing (error)",
            ["result"],
            buckets=SYNC_BUCKETS,
            registry=self.registry,
        )
        self._retries = Counter(
            "saigon_agent_retries_total",
            "Transient failures scheduled for another attempt, by reason",
            ["reason"],
            registry=self.registry,
        )
        self._loads = Counter(
            "saigon_agent_runtime_loads_total",
            "Adapter versions the agent asked its runtime to load, by result (ok, RuntimeRejected, RuntimeUnavailable)",
            ["result", *per_adapter],
            registry=self.registry,
        )
        self._unloads = Counter(
            "saigon_agent_runtime_unloads_total",
            "Adapters (or old versions) the agent unloaded from its runtime",
            registry=self.registry,
        )
        self._adapters = Gauge(
            "saigon_agent_adapters", "Adapters this pod reports, by state", ["state"], registry=self.registry
        )
        self._synced = Gauge(
            "saigon_agent_synced", "1 once every adapter this pod must serve is settled (its readiness gate)",
            registry=self.registry,
        )  # fmt: skip
        self._blocked = Gauge(
            "saigon_agent_watch_blocked",
            "1 while the agent cannot list or watch its SaigonAdapters (readiness fails)",
            registry=self.registry,
        )

        # Series that exist from the start, so the first sync or load already counts in rate().
        for result in (OK, "error"):
            self._sync.labels(result)
        if not adapter_labels:
            self._loads.labels(OK)

    def _adapter(self, name: str) -> tuple[str, ...]:
        return (name,) if self.adapter_labels else ()

    def download(self, name: str, source: str, result: str) -> None:
        self._downloads.labels(source, result, *self._adapter(name)).inc()
        if result in VERIFICATION_REASONS:
            self._verification.labels(result, *self._adapter(name)).inc()

    def downloaded_bytes(self, source: str, size: int) -> None:
        self._bytes.labels(source).inc(size)

    def synced(self, seconds: float, ok: bool) -> None:
        self._sync.labels(OK if ok else "error").observe(seconds)

    def retry(self, reason: str) -> None:
        self._retries.labels(reason).inc()

    def load(self, name: str, result: str) -> None:
        self._loads.labels(result, *self._adapter(name)).inc()

    def unload(self) -> None:
        self._unloads.inc()

    def track_state(
        self, states: Callable[[], Tally[str]], synced: Callable[[], bool], blocked: Callable[[], bool]
    ) -> None:
        """Gauges read at scrape time from the reporter, the one place that knows them."""

        def count(state: str) -> Callable[[], float]:
            return lambda: float(states().get(state, 0))

        for state in get_args(State):
            self._adapters.labels(state).set_function(count(state))
        self._synced.set_function(lambda: float(synced()))
        self._blocked.set_function(lambda: float(blocked()))
