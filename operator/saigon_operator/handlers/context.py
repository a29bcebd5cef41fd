"""What every handler needs: the API client, the status aggregator, operator-wide defaults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import kopf
from saigon_contract.kube import ApiError, KubeClient

from saigon_operator.aggregator import Aggregator
from saigon_operator.builders.model import Defaults
from saigon_operator.events import EventRecorder
from saigon_operator.handlers.credentials import TokenIssuer
from saigon_operator.indexes import AdapterClaims, RuntimePods
from saigon_operator.placement import Placements, RouterSync
from saigon_operator.progress import Progress
from saigon_operator.retry import backoff


@dataclass
class OperatorContext:
    kube: KubeClient
    aggregator: Aggregator
    events: EventRecorder
    defaults: Defaults
    pods: RuntimePods
    claims: AdapterClaims
    progress: Progress
    tokens: TokenIssuer
    placements: Placements
    routing: RouterSync
    # A deletion waits this long for pods to unload before it lets go (dead agents).
    unload_timeout_s: float = 300.0
    # Reconciles a SaigonAdapter again although it did not change (saigon_operator.adapter_controller).
    requeue_adapter: Callable[[tuple[str, str]], None] = lambda key: None


def classify(exc: ApiError, what: str, retry: int) -> kopf.TemporaryError | kopf.PermanentError:
    """Transient API faults back off; anything else (forbidden, invalid) will not heal by retrying."""
    if exc.transient:
        return kopf.TemporaryError(f"{what}: {exc}", delay=backoff(retry))
    return kopf.PermanentError(f"{what}: {exc}")
