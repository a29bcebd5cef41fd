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
    # SaigonAdapters reconciled at once (saigon_operator.adapter_controller); each waits on API writes
    # for most of its time, and the others wait as keys, holding only their newest trimmed body.
    workers: int = 64
    stall_timeout_s: float = 120.0  # /healthz fails after this long with work waiting and no handler finishing
    log_format: str = "text"
    extra: dict[str, str] = field(default_factory=dict)
