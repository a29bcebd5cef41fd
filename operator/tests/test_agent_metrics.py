"""The agent's /metrics: downloads by source and result, bytes, verification failures, on its
health port. No adapter names (they carry user ids) unless the model opts in."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path

import aiohttp
import pytest
from agent_support import TlsFiles, adapter_archive, https_server, make_tls, write_adapter
from aiohttp import web
from controlplane.processes import free_port
from prometheus_client.parser import text_string_to_metric_families
from saigon_agent.app import start_health
from saigon_agent.config import AgentConfig, FetchLimits
from saigon_agent.errors import SyncError
from saigon_agent.fetch import Fetcher
from saigon_agent.metrics import AgentMetrics
from saigon_agent.reporter import PodReporter
from saigon_agent.sources import Materializer
from saigon_agent.store import AdapterStore
from saigon_contract.agent_env import ENV
from saigon_contract.kube import Credentials, KubeClient
from saigon_contract.reports import AdapterReport
from saigon_contract.specs import parse_target

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


def config(tmp_path: Path, **extra: object) -> AgentConfig:
    return AgentConfig(
        namespace="ns", pod_name="p", model="m", adapters_dir=tmp_path / "adapters",
        runtime_url="http://127.0.0.1:1", admin_token="t", health_host="127.0.0.1", health_port=free_port(),
        **extra,  # type: ignore[arg-type]
    )  # fmt: skip


async def installs_then_scrape(tmp_path: Path, tls: TlsFiles, metrics: AgentMetrics) -> tuple[str, Samples]:
    """Three installs through a real HTTPS source (ok, a wrong digest, a 404), then one scrape."""
    data = adapter_archive(write_adapter(tmp_path / "adapter", seed=3), gz=True)
    digest = hashlib.sha256(data).hexdigest()
    limits = FetchLimits(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),), ca_bundle=tls.cert, timeout_s=10)
    fetcher = Fetcher(limits)
    materializer = Materializer(
        AdapterStore(tmp_path / "adapters"), fetcher, limits, tmp_path / "sources", metrics=metrics
    )
    kube = KubeClient(Credentials(host="https://127.0.0.1:1"))  # never called: nothing is published
    reporter = PodReporter(kube, "ns", "p")
    metrics.track_state(reporter.states, lambda: reporter.synced, lambda: reporter.blocked is not None)
    cfg = config(tmp_path)

    async def archive(_: web.Request) -> web.Response:
        return web.Response(body=data)

    async def missing(_: web.Request) -> web.Response:
        return web.Response(status=404)

    runner = await start_health(cfg, reporter, metrics=metrics)
    try:
        async with https_server(tls, {"/a.tgz": archive, "/gone.tgz": missing}) as base:

            def target(version: str, path: str, sha256: str) -> object:
                return parse_target({"version": version, "sha256": sha256, "source": {"https": {"url": base + path}}})

            await materializer.install("user_alice", target("v1", "/a.tgz", digest))  # type: ignore[arg-type]
            reporter.set("user_alice", AdapterReport(state="Loaded", version="v1"))
            with pytest.raises(SyncError, match="sha256"):
                await materializer.install("user_bob", target("v1", "/a.tgz", "0" * 64))  # type: ignore[arg-type]
            with pytest.raises(SyncError, match="404"):
                await materializer.install("user_cy", target("v1", "/gone.tgz", digest))  # type: ignore[arg-type]
            reporter.set("user_cy", AdapterReport(state="Failed", reason="SourceUnavailable"))
        url = f"http://127.0.0.1:{cfg.health_port}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            assert resp.status == 200 and resp.content_type == "text/plain"
            text = await resp.text()
    finally:
        await runner.cleanup()
        await fetcher.close()
        await kube.close()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def family(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


async def test_downloads_bytes_and_verification_failures_without_user_ids(tmp_path: Path, tls: TlsFiles) -> None:
    text, samples = await installs_then_scrape(tmp_path, tls, AgentMetrics())
    downloads = family(samples, "saigon_agent_downloads_total")
    assert downloads == {
        (("result", "ok"), ("source", "https")): 1.0,
        (("result", "DigestMismatch"), ("source", "https")): 1.0,
        (("result", "SourceUnavailable"), ("source", "https")): 1.0,
    }
    verification = family(samples, "saigon_agent_verification_failures_total")
    assert verification == {(("reason", "DigestMismatch"),): 1.0}
    # Two whole archives came over the network (the 404 brought none).
    archive = adapter_archive(tmp_path / "adapter", gz=True)
    assert samples[("saigon_agent_download_bytes_total", (("source", "https"),))] == 2 * len(archive)
    assert samples[("saigon_agent_adapters", (("state", "Loaded"),))] == 1.0
    assert samples[("saigon_agent_adapters", (("state", "Failed"),))] == 1.0
    assert samples[("saigon_agent_synced", ())] == 0.0
    assert samples[("saigon_agent_watch_blocked", ())] == 0.0
    for name in (
        "saigon_agent_sync_duration_seconds",
        "saigon_agent_retries_total",
        "saigon_agent_runtime_loads_total",
    ):
        assert f"# TYPE {name}" in text
    for secret in ("alice", "bob", "user_"):
        assert secret not in text


async def test_adapter_labels_only_when_the_model_opts_in(tmp_path: Path, tls: TlsFiles) -> None:
    _, samples = await installs_then_scrape(tmp_path, tls, AgentMetrics(adapter_labels=True))
    downloads = family(samples, "saigon_agent_downloads_total")
    assert downloads[(("adapter", "user_alice"), ("result", "ok"), ("source", "https"))] == 1.0
    assert downloads[(("adapter", "user_bob"), ("result", "DigestMismatch"), ("source", "https"))] == 1.0


def test_the_opt_in_is_read_from_the_environment_and_checked() -> None:
    base = {
        ENV.NAMESPACE: "ns", ENV.POD_NAME: "p", ENV.MODEL: "m", ENV.ADAPTERS_DIR: "/a",
        ENV.RUNTIME_URL: "http://127.0.0.1:8001", ENV.ADMIN_TOKEN: "t",
    }  # fmt: skip
    assert AgentConfig.from_env(base).metrics_adapter_labels is False
    assert AgentConfig.from_env({**base, ENV.METRICS_ADAPTER_LABELS: "True"}).metrics_adapter_labels is True
    with pytest.raises(ValueError, match=ENV.METRICS_ADAPTER_LABELS):
        AgentConfig.from_env({**base, ENV.METRICS_ADAPTER_LABELS: "yes please"})
