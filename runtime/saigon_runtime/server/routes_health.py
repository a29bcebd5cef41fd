"""Liveness, readiness, metrics and the OpenAPI document: the routes open to anyone."""

from __future__ import annotations

from aiohttp import web

from saigon_runtime.server.metrics import CONTENT_TYPE
from saigon_runtime.server.protocol import HealthResponse, ReadyResponse, json_body
from saigon_runtime.server.routing import Access, ResponseKind, RouteDef
from saigon_runtime.server.state import OPENAPI_KEY, ServerState, state_of


async def healthz(request: web.Request) -> web.Response:
    state = state_of(request)
    if state.engine_error is not None:
        # The base model will never load in this process: let the orchestrator restart it.
        body = HealthResponse(status="failed", detail="the base model failed to load")
        return web.json_response(json_body(body), status=503)
    return web.json_response(json_body(HealthResponse(status="ok")))


def readiness(state: ServerState) -> ReadyResponse:
    engine = state.engine
    required = state.config.required_adapters
    if engine is None:
        return ReadyResponse(
            ready=False, base_model_loaded=False, missing_adapters=list(required), draining=state.draining,
            load_error=state.engine_error,
        )  # fmt: skip
    missing = []
    for name in required:
        try:
            info = engine.adapters.info(name)
        except Exception:
            missing.append(name)
            continue
        if info.version is None or info.error is not None or name not in state.loaded_required:
            missing.append(name)
    ready = not missing and not state.draining
    return ReadyResponse(
        ready=ready, base_model_loaded=True, missing_adapters=missing, draining=state.draining,
        device_fallback=engine.fallback_reason,
    )  # fmt: skip


async def readyz(request: web.Request) -> web.Response:
    body = readiness(state_of(request))
    return web.json_response(json_body(body), status=200 if body.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    payload = state_of(request).metrics.exposition()
    return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE})


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI_KEY])


ROUTES = [
    RouteDef(
        "GET",
        "/healthz",
        healthz,
        "healthz",
        Access.PUBLIC,
        "Liveness",
        "health",
        response_model=HealthResponse,
        error_models={503: HealthResponse},
    ),
    RouteDef(
        "GET",
        "/readyz",
        readyz,
        "readyz",
        Access.PUBLIC,
        "Readiness: base model and required adapters loaded, not draining",
        "health",
        response_model=ReadyResponse,
        error_models={503: ReadyResponse},
    ),
    RouteDef(
        "GET",
        "/metrics",
        metrics,
        "metrics",
        Access.PUBLIC,
        "Prometheus metrics",
        "health",
        response_kind=ResponseKind.TEXT,
    ),
    RouteDef(
        "GET",
        "/openapi.json",
        openapi_document,
        "openapi",
        Access.PUBLIC,
        "This document",
        "health",
        response_kind=ResponseKind.JSON_OBJECT,
    ),
]
