"""Wires the agent together: watch the model's SaigonAdapters, sync, report, serve /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from saigon_contract import resources as r
from saigon_contract.background import BackgroundPool
from saigon_contract.demand import DEMAND_PATH, DemandRequest
from saigon_contract.kube import ApiError, Credentials, KubeClient, custom_path, list_and_watch, object_path
from saigon_contract.names import model_of

from saigon_agent.config import AgentConfig
from saigon_agent.fetch import Fetcher
from saigon_agent.metrics import AgentMetrics
from saigon_agent.reporter import PodReporter
from saigon_agent.runtime_client import RuntimeAdmin
from saigon_agent.sources import Materializer, decode_secret_data
from saigon_agent.store import AdapterStore
from saigon_agent.sts import WebIdentityCredentials
from saigon_agent.syncer import Syncer

log = logging.getLogger("saigon_agent")


async def run_agent(config: AgentConfig, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    kube = KubeClient(Credentials.load(config.kubeconfig))
    store = AdapterStore(config.adapters_dir)
    config.adapters_dir.mkdir(parents=True, exist_ok=True)
    leftovers = store.clean_staging()
    if leftovers:
        log.info("removed %d staging leftovers of an interrupted write", leftovers)

    async def read_secret(name: str) -> dict[str, bytes]:
        return decode_secret_data(await kube.get(object_path("Secret", config.namespace, name)))

    fetcher = Fetcher(config.limits)
    runtime = RuntimeAdmin(config.runtime_url, config.admin_token)
    reporter = PodReporter(kube, config.namespace, config.pod_name)
    metrics = AgentMetrics(adapter_labels=config.metrics_adapter_labels)
    metrics.track_state(reporter.states, lambda: reporter.synced, lambda: reporter.blocked is not None)
    syncer = Syncer(
        store=store,
        materializer=Materializer(
            store,
            fetcher,
            config.limits,
            config.sources_root,
            read_secret,
            web_identity=None if config.web_identity is None else WebIdentityCredentials(config.web_identity, fetcher),
            metrics=metrics,
            background=BackgroundPool(config.concurrency, "saigon-agent-io"),
        ),
        runtime=runtime,
        reporter=reporter,
        concurrency=config.concurrency,
        pod=config.pod_name,
        metrics=metrics,
        linger_s=config.linger_s,
    )
    try:
        reporter.seed(await reporter.load_published())
    except ApiError as exc:
        log.warning("could not read this pod's previous report: %s", exc)
    health = await start_health(config, reporter, syncer, metrics)
    tasks = [
        asyncio.create_task(_watch(kube, config, syncer), name="watch"),
        asyncio.create_task(syncer.watch_runtime(config.resync_s), name="runtime"),
        asyncio.create_task(reporter.run(), name="reporter"),
        asyncio.create_task(syncer.watch_stats(config.stats_interval_s), name="stats"),
    ]
    log.info("agent started for pod %s/%s (model %s)", config.namespace, config.pod_name, config.model)
    try:
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await syncer.close()
        await health.cleanup()
        await fetcher.close()
        await runtime.close()
        await kube.close()


async def _watch(kube: KubeClient, config: AgentConfig, syncer: Syncer) -> None:
    """SaigonAdapters of this pod's model. Filtered here, not by a field selector: selectable fields
    of custom resources are off by default before Kubernetes 1.31. A failing list/watch (RBAC, an
    API server that refuses the request) blocks readiness with the error as the condition."""
    path = custom_path(r.GROUP, r.VERSION, r.ADAPTER_PLURAL, config.namespace)

    def ours(obj: dict[str, Any]) -> bool:
        return model_of(obj) == config.model

    async def relisted(items: list[dict[str, Any]]) -> None:
        syncer.reporter.set_blocked(None)
        await syncer.on_relist([item for item in items if ours(item)])

    def failed(exc: ApiError) -> None:
        syncer.reporter.set_blocked(f"watching SaigonAdapters failed: {exc}")

    async for kind, obj in list_and_watch(kube, path, on_relist=relisted, on_error=failed):
        if ours(obj):
            if kind == "DELETED":
                syncer.on_deleted(obj)
            else:
                syncer.on_object(obj)
        elif kind == "MODIFIED":
            syncer.on_deleted(obj)  # moved to another model: gone for this pod, as a selector would say


async def start_health(
    config: AgentConfig, reporter: PodReporter, syncer: Syncer | None = None, metrics: AgentMetrics | None = None
) -> web.AppRunner:
    """/healthz, /state and /metrics on the agent port. Unauthenticated (the kubelet probes it,
    Prometheus scrapes it), so both tell counts only: adapter names carry user ids (the pod's
    report annotation has the detail), unless the model opts in to adapter labels.
    POST /demand (the runtime's on-demand loads) needs the admin token the runtime shares."""
    metrics = metrics or AgentMetrics()

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def state(_: web.Request) -> web.Response:
        states = reporter.states()
        body: dict[str, Any] = {
            "synced": reporter.synced,
            "adapters": sum(states.values()),
            "states": dict(sorted(states.items())),
        }
        return web.json_response(body)

    async def demand(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if syncer is None or not hmac.compare_digest(given, f"Bearer {config.admin_token}".encode()):
            return web.json_response({"error": "the admin token is required"}, status=401)
        try:
            body = DemandRequest.model_validate_json(await request.read())
        except ValidationError as exc:
            where = ", ".join(".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors())
            return web.json_response({"error": f"invalid demand: {where}"}, status=400)
        result = await syncer.demand(body.adapter, body.timeout_s)
        return web.json_response(result.model_dump(mode="json"), status=404 if result.state == "unknown" else 200)

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=4096)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/state", state)
    app.router.add_post(DEMAND_PATH, demand)
    app.router.add_get("/metrics", prometheus)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.health_host, config.health_port).start()
    return runner


def main_loop(config: AgentConfig) -> None:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await run_agent(config, stop)

    asyncio.run(runner())
