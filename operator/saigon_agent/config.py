"""Agent settings and their defaults; the environment variable names live in saigon_contract.agent_env."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from saigon_contract.agent_env import ENV


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 512 * 1024 * 1024
    # Whole transfer; a 5 MB adapter takes well under a second in-cluster.
    timeout_s: float = 300.0
    connect_timeout_s: float = 10.0
    max_redirects: int = 3
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    ca_bundle: Path | None = None
    # Opt-in (SAIGON_AGENT_HTTPS_PROXY): an http:// proxy for CONNECT tunnels, and the hosts that bypass it.
    https_proxy: str | None = None
    no_proxy: tuple[str, ...] = ()


@dataclass(frozen=True)
class WebIdentityConfig:
    """AssumeRoleWithWebIdentity inputs, under the names the AWS SDKs read (IRSA sets the first two)."""

    role_arn: str
    token_file: Path
    sts_endpoint: str = "https://sts.amazonaws.com"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebIdentityConfig | None:
        role, token = env.get(ENV.AWS_ROLE_ARN), env.get(ENV.AWS_WEB_IDENTITY_TOKEN_FILE)
        if not role or not token:
            return None
        return cls(role, Path(token), (env.get(ENV.AWS_ENDPOINT_URL_STS) or cls.sts_endpoint).rstrip("/"))


def fetch_limits_from_env(
    env: Mapping[str, str], *, max_bytes: int | None = None, timeout_s: float | None = None
) -> FetchLimits:
    """The download settings the agent and `fetch-model` share (guard, CA bundle, proxy)."""
    ca = env.get(ENV.CA_BUNDLE)
    proxy = env.get(ENV.HTTPS_PROXY) or None
    if proxy is not None and not proxy.startswith("http://"):
        raise ValueError(f"{ENV.HTTPS_PROXY}={proxy!r}: must be an http:// proxy URL")
    return FetchLimits(
        max_bytes=max_bytes or int(env.get(ENV.MAX_ARTIFACT_BYTES) or FetchLimits.max_bytes),
        timeout_s=timeout_s or float(env.get(ENV.FETCH_TIMEOUT_S) or FetchLimits.timeout_s),
        allowed_networks=parse_networks(env.get(ENV.ALLOWED_CIDRS, "")),
        ca_bundle=Path(ca) if ca else None,
        https_proxy=proxy,
        no_proxy=tuple(h.strip().lower().lstrip(".") for h in env.get(ENV.NO_PROXY, "").split(",") if h.strip()),
    )


@dataclass(frozen=True)
class AgentConfig:
    namespace: str
    pod_name: str
    model: str
    adapters_dir: Path
    runtime_url: str
    admin_token: str
    sources_root: Path = Path("/mnt/saigon-sources")
    limits: FetchLimits = field(default_factory=FetchLimits)
    health_host: str = "0.0.0.0"
    health_port: int = 8081
    concurrency: int = 4
    resync_s: float = 30.0
    linger_s: float = 60.0
    stats_interval_s: float = 2.0
    kubeconfig: str | None = None
    web_identity: WebIdentityConfig | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AgentConfig:
        env = os.environ if env is None else env
        missing = [
            name
            for name in (ENV.NAMESPACE, ENV.POD_NAME, ENV.MODEL, ENV.ADAPTERS_DIR, ENV.RUNTIME_URL, ENV.ADMIN_TOKEN)
            if not env.get(name)
        ]
        if missing:
            raise ValueError(f"missing environment: {', '.join(missing)}")
        limits = fetch_limits_from_env(env)
        return cls(
            namespace=env[ENV.NAMESPACE],
            pod_name=env[ENV.POD_NAME],
            model=env[ENV.MODEL],
            adapters_dir=Path(env[ENV.ADAPTERS_DIR]),
            runtime_url=env[ENV.RUNTIME_URL].rstrip("/"),
            admin_token=env[ENV.ADMIN_TOKEN],
            sources_root=Path(env.get(ENV.SOURCES_ROOT) or "/mnt/saigon-sources"),
            limits=limits,
            health_host=env.get(ENV.HEALTH_HOST) or "0.0.0.0",
            health_port=int(env.get(ENV.HEALTH_PORT) or 8081),
            concurrency=max(1, int(env.get(ENV.CONCURRENCY) or 4)),
            resync_s=float(env.get(ENV.RESYNC_S) or 30.0),
            linger_s=max(0.0, float(env.get(ENV.LINGER_S) or 60.0)),
            stats_interval_s=max(0.2, float(env.get(ENV.STATS_INTERVAL_S) or 2.0)),
            kubeconfig=env.get(ENV.KUBECONFIG) or None,
            web_identity=WebIdentityConfig.from_env(env),
        )


def parse_networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """ "10.0.0.0/8, fd00::/8" -> networks; raises ValueError on a malformed entry."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in raw.split(",") if item.strip())
