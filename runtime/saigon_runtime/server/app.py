"""The aiohttp application: routes from the route table, middlewares, state and lifecycle.

Lifecycle: the server listens at once; the base model loads in a worker thread (readiness says
when it is in). On SIGTERM `drain` marks the app draining while it still listens (new requests get
503, /readyz answers 503 so the router and the endpoints stop sending), in-flight requests and
streams get `drain_timeout_s` to finish, then the listener closes and the cleanup contexts stop
the engine and close the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from saigon_runtime.adapters.types import scope_of
from saigon_runtime.config import RuntimeConfig
from saigon_runtime.server import (
    routes_admin,
    routes_health,
    routes_lora,
    routes_mesh,
    routes_openai,
    routes_saigon,
    routes_users,
)
from saigon_runtime.server.auth import CREDENTIALS_KEY, ROUTE_ACCESS_KEY, Credentials, auth_middleware
from saigon_runtime.server.errors import error_middleware
from saigon_runtime.server.metrics import ServerMetrics
from saigon_runtime.server.openapi import build_openapi
from saigon_runtime.server.routing import Access, RouteDef
from saigon_runtime.server.state import OPENAPI_KEY, STATE_KEY, ServerState
from saigon_runtime.tokens import TokenFile

if TYPE_CHECKING:
    from saigon_runtime.engine.engine import Engine

log = logging.getLogger(__name__)

API_VERSION = "0.1.0"
_KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})


def all_routes() -> list[RouteDef]:
    return [
        *routes_health.ROUTES,
        *routes_saigon.ROUTES,
        *routes_mesh.ROUTES,
        *routes_openai.ROUTES,
        *routes_admin.ROUTES,
        *routes_users.ROUTES,
        *routes_lora.ROUTES,
    ]


def create_app(
    config: RuntimeConfig, engine: Engine | None = None, *, freeze_after_load: bool = False
) -> web.Application:
    """Build the app. With `engine`, the app takes it over (starts it, stops it on cleanup);
    without, it loads one from `config` in the background once the server is up. With
    `freeze_after_load` (the process is the server's own: the CLI), what exists once the engine
    has loaded is moved out of the garbage collector's sight (see gc_pauses.py)."""
    quiet_malformed_requests()
    state = ServerState(config=config, metrics=ServerMetrics(lambda: state.stats()))
    app = web.Application(
        client_max_size=config.max_body_bytes,
        middlewares=[metrics_middleware, error_middleware, auth_middleware],
    )
    app[STATE_KEY] = state
    if config.gie_metrics:
        from saigon_runtime.server.gie_metrics import GieCollector

        state.metrics.registry.register(GieCollector(lambda: state.engine))
    token_file = TokenFile(config.inference_tokens_file) if config.inference_tokens_file is not None else None
    credentials = Credentials(config.admin_token, dict(config.inference_tokens), token_file)
    app[CREDENTIALS_KEY] = credentials
    routes = all_routes()
    access: dict[web.AbstractRoute, Access] = {}
    for route in routes:
        registered = app.router.add_route(route.method, route.path, route.handler, name=route.name)
        access[registered] = route.access
    app[ROUTE_ACCESS_KEY] = access
    app[OPENAPI_KEY] = build_openapi(routes, inference_auth=credentials.inference_auth, version=API_VERSION)
    app.cleanup_ctx.append(state.metrics.gc_pauses.context())
    app.cleanup_ctx.append(_services)
    app.cleanup_ctx.append(_engine_lifecycle(engine, freeze_after_load))
    app.on_shutdown.append(_start_draining)
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    """The user store and the audit log; both are closed after the engine has stopped."""
    from saigon_runtime.audit import audit_from_config
    from saigon_runtime.userstore import open_user_store

    state = app[STATE_KEY]
    # A database that cannot be reached stops the start-up here, with its reason (StoreUnavailable).
    state.users = await asyncio.to_thread(open_user_store, state.config)
    state.audit = await asyncio.to_thread(audit_from_config, state.config)
    if state.config.demand_url and state.config.admin_token:
        from saigon_runtime.server.demand import OnDemand

        state.demand = OnDemand(state.config.demand_url, state.config.admin_token, state.config.demand_timeout_s)
    yield
    if state.demand is not None:
        await state.demand.close()
    if state.audit is not None:
        await asyncio.to_thread(state.audit.close)
    if state.users is not None:
        await asyncio.to_thread(state.users.close)


def _engine_lifecycle(given: Engine | None, freeze: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        state = app[STATE_KEY]
        loader: asyncio.Task[None] | None = None
        if given is not None:
            await _attach(state, given)
        else:
            loader = asyncio.create_task(_load_engine(state, freeze))
        yield
        if loader is not None:
            # A load still running cannot be interrupted (it is in a thread); wait for it.
            with contextlib.suppress(asyncio.CancelledError):
                await loader
        for task in list(state.background):
            task.cancel()
        if state.watcher is not None:
            await asyncio.to_thread(state.watcher.stop)
        if state.engine is not None:
            await asyncio.to_thread(_save_hot_set, state.engine, state.config.hotset_file)
            await asyncio.to_thread(state.engine.stop, state.config.drain_timeout_s)
        state.preparer.shutdown()
        state.loader.shutdown()

    return lifecycle


async def _load_engine(state: ServerState, freeze: bool) -> None:
    from saigon_runtime.assembly import build_engine

    started = time.perf_counter()
    try:
        engine = await asyncio.to_thread(build_engine, state.config)
    except Exception as exc:
        state.engine_error = f"{type(exc).__name__}: {exc}"
        log.error("the base model failed to load: %s", state.engine_error)
        return
    log.info("base model %s loaded on %s in %.1fs", engine.model_id, engine.device, time.perf_counter() - started)
    await _attach(state, engine)
    if freeze:
        gc.collect()  # the start-up's garbage goes first; what is left lives as long as the process
        gc.freeze()


async def _attach(state: ServerState, engine: Engine) -> None:
    from saigon_runtime.adapters.hotset import load_hot_set
    from saigon_runtime.adapters.watcher import AdapterWatcher
    from saigon_runtime.service import InferenceService

    engine.add_step_observer(state.metrics.observe_step)
    engine.start()
    await _load_required_adapters(state, engine)
    # Warm restart: what was resident at the last shutdown is resident again before Ready.
    preloaded = await asyncio.to_thread(load_hot_set, engine.adapters, state.config.hotset_file)
    if preloaded:
        log.info("preloaded %d adapters from the hot set", len(preloaded))
    if state.config.watch_interval_s > 0 and engine.adapters.store is not None:
        state.watcher = AdapterWatcher(engine.adapters, state.config.watch_interval_s)
        state.watcher.start()
    state.service = InferenceService(engine, state.users, state.audit, mesh_max_tokens=state.config.mesh_max_tokens)
    state.engine = engine


def _save_hot_set(engine: Engine, path: Path | None) -> None:
    from saigon_runtime.adapters.hotset import save_hot_set

    try:
        save_hot_set(engine.adapters, path)
    except OSError as exc:  # a read-only adapters volume (the agent owns it): nothing to keep
        log.info("hot set not saved (%s)", type(exc).__name__)


async def _load_required_adapters(state: ServerState, engine: Engine) -> None:
    for name in state.config.required_adapters:
        try:
            await asyncio.to_thread(engine.adapters.load, name)
        except Exception as exc:  # /readyz names it; the agent can load it later
            # Scope and error class only: adapter names and messages can carry a user id.
            log.warning("a required %s adapter did not load (%s)", scope_of(name), type(exc).__name__)
            continue
        state.loaded_required.add(name)


async def _start_draining(app: web.Application) -> None:
    state = app[STATE_KEY]
    if not state.draining:
        state.draining = True
        log.info("draining: no new requests; waiting for in-flight requests and streams")


async def drain(app: web.Application, timeout_s: float, give_up: asyncio.Event | None = None) -> int:
    """Stop taking work while still listening: /readyz answers 503 (so the router and the endpoints
    stop sending), new requests get 503, and in-flight requests and streams run to their end, for
    `timeout_s` at most or until `give_up` is set. Returns the requests still in flight."""
    state = app[STATE_KEY]
    await _start_draining(app)
    waits = [asyncio.ensure_future(state.idle.wait())]
    if give_up is not None:
        waits.append(asyncio.ensure_future(give_up.wait()))
    await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    for waiting in waits:
        waiting.cancel()
    if state.in_flight:
        log.warning("drain ended with %d requests still in flight", state.in_flight)
    else:
        log.info("drained: no request in flight")
    return state.in_flight


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[STATE_KEY].metrics
    route = request.match_info.route.name or "unmatched"
    method = request.method if request.method in _KNOWN_METHODS else "other"
    started = time.perf_counter()
    status = 500
    metrics.http_in_flight.inc()
    # Probes and scrapes do not hold a drain open; everything else does.
    counted = request.app[ROUTE_ACCESS_KEY].get(request.match_info.route, Access.PUBLIC) is not Access.PUBLIC
    state = request.app[STATE_KEY]
    if counted:
        state.request_started()
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if counted:
            state.request_finished()
        metrics.http_in_flight.dec()
        metrics.http_requests.labels(route, method, str(status)).inc()
        metrics.http_duration.labels(route).observe(time.perf_counter() - started)


class RouteAccessLogger(AbstractAccessLogger):
    """Access log lines name the route template, never the path: paths can hold user ids."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        try:
            match = request.match_info  # type: ignore[attr-defined]
        except (AttributeError, AssertionError):  # a request refused by the HTTP parser never matched a route
            match = None
        resource = match.route.resource if match is not None else None
        route = resource.canonical if resource is not None else "unmatched"
        self.logger.info("%s %s %s %.3fs", request.method, route, response.status, time)


class _MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request its parser refuses (a header over 8,190 bytes, bad bytes) at ERROR
    with a traceback, although it answers 400 and the access log has a line for it: drop those."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, HttpProcessingError)


_MALFORMED_REQUESTS = _MalformedRequestFilter()


def quiet_malformed_requests() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if _MALFORMED_REQUESTS not in server_log.filters:
        server_log.addFilter(_MALFORMED_REQUESTS)
