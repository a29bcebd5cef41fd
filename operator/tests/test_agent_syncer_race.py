"""The syncer against a runtime whose adapter listings are slow: loads that finish while a
listing is in flight must not be taken for adapters the runtime lost (issue 19: the agent
reloaded 1-11 adapters and flipped the pod's readiness to False in every 1,000-adapter run)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from agent_support import write_adapter
from aiohttp import web
from saigon_agent.config import FetchLimits
from saigon_agent.fetch import Fetcher
from saigon_agent.reporter import PodReporter
from saigon_agent.runtime_client import RuntimeAdmin
from saigon_agent.sources import Materializer
from saigon_agent.store import AdapterStore
from saigon_agent.syncer import Syncer
from saigon_contract.kube import Credentials, KubeClient

TOKEN = "admin-token"


@dataclass
class SlowListingRuntime:
    """The runtime's admin API as the agent uses it; a listing shows what was loaded when the
    request arrived and answers `list_delay_s` later (a busy runtime listing thousands)."""

    list_delay_s: float
    load_delay_s: float
    loaded: dict[str, str] = field(default_factory=dict)
    loads: Counter[str] = field(default_factory=Counter)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/admin/adapters", self._list)
        app.router.add_post("/admin/adapters/load", self._load)
        app.router.add_post("/admin/adapters/unload", self._unload)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def _list(self, _: web.Request) -> web.Response:
        snapshot = [{"name": n, "active_version": v, "loaded_at": time.time()} for n, v in self.loaded.items()]
        await asyncio.sleep(self.list_delay_s)
        return web.json_response({"adapters": snapshot})

    async def _load(self, request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(self.load_delay_s)
        self.loaded[body["name"]] = body["version"]
        self.loads[body["name"]] += 1
        return web.json_response({"name": body["name"], "version": body["version"], "loaded_at": time.time()})

    async def _unload(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.loaded.pop(body["name"], None)
        return web.json_response({"name": body["name"]})


class ReadinessLog(PodReporter):
    """The pod reporter, keeping every readiness change (it publishes nothing here)."""

    def __init__(self) -> None:
        super().__init__(KubeClient(Credentials(host="http://127.0.0.1:9")), "ns", "pod")
        self.changes: list[bool] = []

    def set_synced(self, synced: bool) -> None:
        if synced != self.synced:
            self.changes.append(synced)
        super().set_synced(synced)


def adapter_object(i: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"a{i}", "uid": f"uid-{i}", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {
            "adapterName": f"user_u{i}",
            "target": {"version": "v1", "source": {"pvc": {"claimName": "team", "path": "shared"}}},
        },
    }


@contextlib.asynccontextmanager
async def syncing(
    tmp_path: Path, runtime: SlowListingRuntime, **options: Any
) -> AsyncIterator[tuple[Syncer, ReadinessLog]]:
    """A syncer (installing from a PVC directory) and its runtime watch, against `runtime` served on 127.0.0.1."""
    write_adapter(tmp_path / "sources" / "team" / "shared", seed=3)
    runner = web.AppRunner(runtime.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    admin = RuntimeAdmin(f"http://127.0.0.1:{port}", TOKEN)
    store = AdapterStore(tmp_path / "adapters")
    limits = FetchLimits(timeout_s=10)
    reporter = ReadinessLog()
    syncer = Syncer(
        store=store,
        materializer=Materializer(store, Fetcher(limits), limits, tmp_path / "sources"),
        runtime=admin,
        reporter=reporter,
        concurrency=4,
        **options,
    )
    watcher = asyncio.create_task(syncer.watch_runtime(interval_s=0.02, probe_s=0.02))
    try:
        yield syncer, reporter
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await syncer.close()
        await admin.close()
        await runner.cleanup()


async def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


async def test_loads_that_finish_during_a_listing_are_neither_reloaded_nor_flip_readiness(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = SlowListingRuntime(list_delay_s=0.15, load_delay_s=0.01)
    names = {f"user_u{i}" for i in range(70)}
    async with syncing(tmp_path, runtime) as (syncer, reporter):
        with caplog.at_level(logging.WARNING, logger="saigon_agent.syncer"):
            await syncer.on_relist([adapter_object(i) for i in range(10)])
            await wait_until(lambda: reporter.synced, 30, "the pod becomes ready")
            # A bulk apply while the pod is Ready: 60 more, loaded while listings are in flight.
            for i in range(10, 70):
                syncer.on_object(adapter_object(i))
            await wait_until(lambda: set(runtime.loaded) == names, 60, "every adapter loaded")
            await syncer.idle()
            await asyncio.sleep(0.5)  # several more listings, now all complete
            await syncer.idle()
    assert set(runtime.loads) == names
    assert [n for n, c in runtime.loads.items() if c != 1] == [], "adapters loaded more than once"
    assert reporter.changes == [True], "readiness flickered"
    assert not [r for r in caplog.records if "no longer serves" in r.getMessage()]
    assert all(reporter.get(n) is not None and reporter.get(n).state == "Loaded" for n in names)  # type: ignore[union-attr]


async def test_a_runtime_that_really_lost_its_adapters_gets_them_back(tmp_path: Path) -> None:
    runtime = SlowListingRuntime(list_delay_s=0.05, load_delay_s=0.01)
    async with syncing(tmp_path, runtime) as (syncer, reporter):
        await syncer.on_relist([adapter_object(i) for i in range(5)])
        await wait_until(lambda: reporter.synced, 30, "the pod becomes ready")
        runtime.loaded.clear()  # a runtime restart: nothing resident any more
        await wait_until(lambda: len(runtime.loaded) == 5, 30, "every adapter loaded again")
    assert all(c == 2 for c in runtime.loads.values())
    assert reporter.changes[:2] == [True, False]
