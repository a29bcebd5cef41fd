"""The agent's unauthenticated /state endpoint: counts, never adapter names (they carry user ids)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from controlplane.processes import free_port
from saigon_agent.app import start_health
from saigon_agent.config import AgentConfig
from saigon_agent.metrics import AgentMetrics
from saigon_agent.reporter import PodReporter
from saigon_contract.kube import Credentials, KubeClient
from saigon_contract.reports import AdapterReport


def test_state_tells_counts_and_no_user_ids(tmp_path: Path) -> None:
    port = free_port()
    config = AgentConfig(
        namespace="ns", pod_name="p", model="m", adapters_dir=tmp_path, runtime_url="http://127.0.0.1:1",
        admin_token="t", health_host="127.0.0.1", health_port=port,
    )  # fmt: skip

    async def scenario() -> tuple[str, dict[str, Any]]:
        kube = KubeClient(Credentials(host="https://127.0.0.1:1"))  # never called: nothing is published
        reporter = PodReporter(kube, "ns", "p")
        reporter.set("user_alice", AdapterReport(state="Loaded", version="v1"))
        reporter.set("user_bob", AdapterReport(state="Failed", reason="BadConfig", error="boom"))
        reporter.set("domain_legal", AdapterReport(state="Loaded", version="v3"))
        reporter.set_synced(True)
        runner = await start_health(config, reporter, metrics=AgentMetrics())
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/state") as resp:
                assert resp.status == 200
                return await resp.text(), await resp.json()
        finally:
            await runner.cleanup()
            await kube.close()

    text, body = asyncio.run(scenario())
    assert body == {"synced": True, "adapters": 3, "states": {"Failed": 1, "Loaded": 2}}
    for secret in ("alice", "bob", "legal", "user_", "boom"):
        assert secret not in text
