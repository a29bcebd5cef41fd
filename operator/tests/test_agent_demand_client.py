"""A cross-part test: the runtime's on-demand client (saigon_runtime.server.demand.OnDemand) against the agent's real
/demand endpoint: many requests waiting for one adapter cost one load, an undeclared adapter is not
asked for again for a while, and an agent that cannot be reached is a None (the cascade falls back)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from saigon_agent.app import start_health
from saigon_runtime.server.demand import OnDemand
from test_agent_placement import agent_config, placed
from test_agent_syncer_race import TOKEN, SlowListingRuntime, syncing, wait_until


async def test_concurrent_demands_load_once_and_unknown_adapters_are_remembered(tmp_path: Path) -> None:
    runtime = SlowListingRuntime(list_delay_s=0.01, load_delay_s=0.3)
    config = agent_config(tmp_path, "llama-a")
    port = config.health_port
    client = OnDemand(f"http://127.0.0.1:{port}", TOKEN, timeout_s=20)
    async with syncing(tmp_path, runtime, pod="llama-a") as (syncer, reporter):
        await syncer.on_relist([placed(0, ["llama-b", "llama-c"])])
        await wait_until(lambda: reporter.synced, 30, "the pod becomes ready")
        health = await start_health(config, reporter, syncer)
        try:
            results = await asyncio.gather(*(client.ensure("user_u0") for _ in range(20)))
            assert {r.state if r else None for r in results} == {"loaded"}
            assert runtime.loads["user_u0"] == 1
            first = await client.ensure("user_nobody")
            assert first is not None and first.state == "unknown"
        finally:
            await health.cleanup()
        # The agent is gone now: an unknown adapter is still known to be unknown, anything else is None.
        again = await client.ensure("user_nobody")
        assert again is not None and again.state == "unknown"
        assert await client.ensure("user_u1") is None
        # A client with the wrong token is refused (None): the agent's port admits its node too.
        health = await start_health(config, reporter, syncer)
        stranger = OnDemand(f"http://127.0.0.1:{port}", "wrong", timeout_s=5)
        try:
            assert await stranger.ensure("user_u0") is None
        finally:
            await stranger.close()
            await health.cleanup()
    await client.close()
