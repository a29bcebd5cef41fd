"""What every handler needs: the API client, the status aggregator, operator-wide defaults."""

from __future__ import annotations

from dataclasses import dataclass

import kopf
from saigon_contract.kube import ApiError, KubeClient

from saigon_operator.aggregator import Aggregator
from saigon_operator.builders.model import Defaults
from saigon_operator.events import EventRecorder
from saigon_operator.indexes import AdapterClaims, RuntimePods
from saigon_operator.progress import Progress


@dataclass
class OperatorContext:
    kube: KubeClient
    aggregator: Aggregator
    events: EventRecorder
    defaults: Defaults
    pods: RuntimePods
    claims: AdapterClaims
    progress: Progress
    # A deletion waits this long for pods to unload before it lets go (dead agents).
    unload_timeout_s: float = 300.0


def backoff(retry: int, base: float = 1.0, cap: float = 60.0) -> float:
    return float(min(cap, base * 2 ** min(retry, 10)))


def classify(exc: ApiError, what: str, retry: int) -> kopf.TemporaryError | kopf.PermanentError:
    """Transient API faults back off; anything else (forbidden, invalid) will not heal by retrying."""
    if exc.transient:
        return kopf.TemporaryError(f"{what}: {exc}", delay=backoff(retry))
    return kopf.PermanentError(f"{what}: {exc}")
