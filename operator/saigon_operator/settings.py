"""The operator's own settings (from its command line; see saigon_operator.cli)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OperatorConfig:
    agent_image: str
    agent_image_pull_policy: str = "IfNotPresent"
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    kubeconfig: str | None = None
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    lease_namespace: str = "default"
    lease_name: str = "saigon-operator"
    lease_duration_s: float = 15.0
    identity: str = ""
    unload_timeout_s: float = 300.0
    # Objects kopf handles at once. A waiting object holds its queued events (at 64, during a bulk
    # apply of 10,000 adapters, 9,000 waited); the operator's indexes are its own informers, so no
    # worker waits on another object. kopf's connections stay bounded (saigon_operator.connections).
    workers: int = 512
    # kopf's settings.queueing.idle_timeout: how long an object's worker waits for its next event.
    # Every event (our own status writes included) holds one of `workers` for this long, so it
    # sets the pace of a bulk apply: 0.5 s allowed ~100 events/s, 10,000 adapters' targets in 460 s.
    worker_idle_s: float = 0.05
    stall_timeout_s: float = 120.0  # /healthz fails after this long with work waiting and no handler finishing
    log_format: str = "text"
    extra: dict[str, str] = field(default_factory=dict)
