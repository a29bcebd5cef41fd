"""The operator's /healthz (its liveness probe) follows the progress watchdog."""

from __future__ import annotations

import aiohttp
from controlplane.processes import free_port
from fake_clock import Clock
from saigon_operator.cli import _serve_http
from saigon_operator.progress import Progress
from saigon_operator.settings import OperatorConfig


async def test_healthz_fails_while_adapters_wait_and_no_handler_finishes() -> None:
    clock = Clock(0.0)
    progress = Progress(120, clock)
    config = OperatorConfig(agent_image="x", http_host="127.0.0.1", http_port=free_port())
    runner = await _serve_http(config, progress.stalled)
    url = f"http://127.0.0.1:{config.http_port}/healthz"
    try:
        async with aiohttp.ClientSession() as session:
            progress.noticed(("ns", "a"), 1)
            clock.now = 100
            async with session.get(url) as resp:
                assert resp.status == 200
            clock.now = 121
            async with session.get(url) as resp:
                assert resp.status == 503
                assert await resp.json() == {
                    "status": "failed",
                    "reason": "1 objects wait, and no handler has finished for 121s",
                }
            progress.finished(("ns", "a"), 1)
            async with session.get(url) as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()
