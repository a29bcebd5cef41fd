"""The operator's Prometheus metrics. Labels are bounded: kinds, outcomes and reasons only."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("saigon_operator_reconciles_total", "Reconciliations by kind and outcome", ["kind", "outcome"])
RECONCILE_SECONDS = Histogram(
    "saigon_operator_reconcile_duration_seconds",
    "Time spent in one reconciliation",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ERRORS = Counter("saigon_operator_errors_total", "Reconciliation errors by kind and reason", ["kind", "reason"])
STATUS_WRITES = Counter("saigon_operator_status_writes_total", "Status patches written", ["kind"])
STATUS_LAG = Histogram(
    "saigon_operator_status_flush_seconds",
    "Time from a pod report change to the status patches it causes",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PROMOTIONS = Counter(
    "saigon_operator_promotions_total", "Adapter promotions that ended, by outcome (Promoted, RolledBack)", ["outcome"]
)
# Both outcomes exist from the start, so the first promotion already counts in increase().
for _outcome in ("Promoted", "RolledBack"):
    PROMOTIONS.labels(_outcome)
EVENTS_SUMMARIZED = Counter(
    "saigon_operator_events_summarized_total",
    "Adapter Events over their model's budget, told in a summary Event instead, by type",
    ["type"],
)
OBJECTS = Gauge("saigon_operator_objects", "Objects the operator tracks", ["kind"])
LEADER = Gauge("saigon_operator_leader", "1 while this replica holds the leader lease")


@contextmanager
def reconciling(kind: str) -> Iterator[dict[str, str]]:
    """Times one reconciliation; the body may set result["outcome"] (default "success")."""
    result = {"outcome": "success"}
    started = time.perf_counter()
    try:
        yield result
    except BaseException as exc:
        if result["outcome"] == "success":
            result["outcome"] = "error"
        ERRORS.labels(kind, type(exc).__name__).inc()
        raise
    finally:
        RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)
        RECONCILES.labels(kind, result["outcome"]).inc()
