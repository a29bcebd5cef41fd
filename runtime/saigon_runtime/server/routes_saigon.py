"""The original Saigon endpoints: infer, batch infer, hot-swap and status.

A request is served by the caller's adapter cascade (explicit adapter -> user -> domain ->
global -> base), with the user's mesh context assembled into the prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

from aiohttp import web

from saigon_runtime.adapters.names import user_adapter
from saigon_runtime.engine.types import GenerationResult
from saigon_runtime.errors import EngineError
from saigon_runtime.server.auth import Principal, check_adapter_visible, principal, visible_to
from saigon_runtime.server.demand import load_if_missing
from saigon_runtime.server.errors import ApiError, from_engine_error
from saigon_runtime.server.generation import Generation, record_served, submit
from saigon_runtime.server.identity import caller_user
from saigon_runtime.server.protocol import (
    BatchInferRequest,
    BatchInferResponse,
    CacheTiers,
    HotSwapRequest,
    HotSwapResponse,
    InferRequest,
    InferResponse,
    InferStreamEvent,
    ResidentAdapter,
    SingleInferRequest,
    StatusResponse,
    json_body,
)
from saigon_runtime.server.routes_admin import import_source, load_in_two_steps, off_loop
from saigon_runtime.server.routing import Access, ResponseKind, RouteDef, parse_body
from saigon_runtime.server.sse import open_event_stream, send_done, send_error, send_event
from saigon_runtime.server.state import ServerState, state_of
from saigon_runtime.service import Prepared

log = logging.getLogger(__name__)


async def prepare(request: web.Request, state: ServerState, item: InferRequest) -> Prepared:
    """Cascade, mesh context, prompt and token ids, as SaigonInference does (off the event loop:
    resolving an adapter or reading a mesh may touch the disk)."""
    user_id = caller_user(request, item.user_id, field="user_id")
    if item.adapter is not None:
        check_adapter_visible(request, item.adapter, field="adapter")
    else:
        await load_if_missing(state, user_id)
    prepare_one = functools.partial(
        state.ready_service().prepare,
        user_id,
        item.input_text,
        use_mesh_context=item.use_mesh_context,
        temperature=item.temperature,
        max_new_tokens=item.max_length,
        system_prompt=item.system_prompt,
        adapter=item.adapter,
        strict_adapter=True,
        top_p=item.top_p,
        stop=item.stop_sequences(),
    )
    return await state.tokenizing(prepare_one)


def _response(state: ServerState, prepared: Prepared, result: GenerationResult) -> InferResponse:
    if result.failed:
        raise ApiError(500, "generation failed", code="generation_failed")
    answer = record_served(state, prepared, result)
    return InferResponse.model_validate({k: v for k, v in answer.items() if k in InferResponse.model_fields})


async def infer(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, SingleInferRequest)
    state = state_of(request)
    prepared = await prepare(request, state, body)
    if body.stream:
        return await _stream(request, state, prepared)
    result = await submit(state, prepared.request).result()
    return web.json_response(json_body(_response(state, prepared, result)))


async def _stream(request: web.Request, state: ServerState, prepared: Prepared) -> web.StreamResponse:
    """Server-sent events: {"text": delta} as tokens come, then {"text": "", "result": {...}}, then [DONE].

    As on the OpenAI routes, the response starts with the first token, so an early failure keeps
    its HTTP status."""
    gen = submit(state, prepared.request, stream=True)
    async with contextlib.aclosing(gen.tokens()) as tokens:
        pending = await anext(tokens, None)
        if pending is None:
            await gen.result()
        response = await open_event_stream(request)
        sent: list[str] = []
        try:
            while pending is not None:
                if pending.text:
                    sent.append(pending.text)
                    await send_event(response, InferStreamEvent(text=pending.text))
                pending = await anext(tokens, None)
            result = await gen.result()
            if result.failed:
                await send_error(response, ApiError(500, "generation failed", code="generation_failed"))
            else:
                streamed = "".join(sent)
                tail = result.text[len(streamed) :] if result.text.startswith(streamed) else ""
                await send_event(response, InferStreamEvent(text=tail, result=_response(state, prepared, result)))
        except EngineError as exc:
            await send_error(response, from_engine_error(exc))
        except ConnectionResetError:
            return response
        await send_done(response)
        return response


async def infer_batch(request: web.Request) -> web.Response:
    body = await parse_body(request, BatchInferRequest)
    state = state_of(request)
    limit = state.config.max_queue
    if len(body.requests) > limit:
        raise ApiError(413, f"a batch holds at most {limit} requests", param="requests", code="batch_too_large")
    started = time.perf_counter()
    prepared = [await prepare(request, state, item) for item in body.requests]
    results: list[GenerationResult] = []
    if body.parallel:
        # All submitted before any is awaited: the engine batches them into the same steps.
        generations: list[Generation] = []
        try:
            for p in prepared:
                generations.append(submit(state, p.request))
        except BaseException:
            for g in generations:
                g.handle.cancel()
            raise
        results = list(await asyncio.gather(*(g.result() for g in generations)))
    else:
        for p in prepared:
            results.append(await submit(state, p.request).result())
    responses = [_response(state, p, r) for p, r in zip(prepared, results, strict=True)]
    total = round((time.perf_counter() - started) * 1000.0, 3)
    return web.json_response(
        json_body(BatchInferResponse(results=responses, count=len(responses), total_latency_ms=total))
    )


async def hot_swap(request: web.Request) -> web.Response:
    body = await parse_body(request, HotSwapRequest)
    state = state_of(request)
    engine = state.ready_engine()
    name = user_adapter(body.user_id)
    source = await import_source(state, body.new_adapter_path, "new_adapter_path")
    previous = engine.adapters.current_version(name)
    loaded = await load_in_two_steps(state, engine, name, None, source)
    info = await off_loop(engine.adapters.swapped_in, previous, loaded, body.backup_current)
    assert info.version is not None
    response = HotSwapResponse(
        success=True, adapter=name, version=info.version, previous_version=previous, loaded_at=info.loaded_at
    )
    return web.json_response(json_body(response))


async def status(request: web.Request) -> web.Response:
    state = state_of(request)
    who = principal(request)
    engine = state.engine
    # Another user's data never shows: the last user served only to that user or the admin.
    current_user = state.current_user if _may_see_user(who, state.current_user) else None
    current_adapter = state.current_adapter
    if current_adapter is not None and not _may_see_adapter(who, current_adapter):
        current_adapter = None
    if engine is None:
        return web.json_response(
            json_body(
                StatusResponse(
                    engine_initialized=False,
                    current_user=current_user,
                    current_adapter=current_adapter,
                    device=None,
                    base_model=None,
                    cache_enabled=True,
                    cache_size=0,
                    cache_max_size=state.config.max_loras or 0,
                    cache=None,
                    resident_adapters=[],
                    queue_depth=0,
                    running=0,
                    load_error=state.engine_error,
                )
            )
        )
    stats = engine.stats()
    infos = await asyncio.to_thread(engine.adapters.list_adapters)
    resident = [
        ResidentAdapter(name=i.name, version=i.version, tier=i.tier, pinned=i.pinned)  # type: ignore[arg-type]
        for i in infos
        if i.tier != "disk" and i.version is not None and _may_see_adapter(who, i.name)
    ]
    c = stats.cache
    body = StatusResponse(
        engine_initialized=True,
        current_user=current_user,
        current_adapter=current_adapter,
        device=engine.device,
        base_model=engine.model_id,
        cache_enabled=c.max_loras > 0,
        cache_size=c.resident_device,
        cache_max_size=c.max_loras,
        cache=CacheTiers(
            device=c.resident_device,
            host=c.resident_host,
            max_device=c.max_loras,
            max_host=c.max_cpu_loras,
            hits=c.hits,
            misses=c.misses,
            loads=c.loads,
            evictions=c.evictions,
        ),
        resident_adapters=resident,
        queue_depth=stats.queue_depth,
        running=stats.running,
        device_fallback=engine.fallback_reason,
    )
    return web.json_response(json_body(body))


def _may_see_user(who: Principal, user_id: str | None) -> bool:
    return who.kind == "admin" or (who.is_tenant and user_id == who.user_id)


def _may_see_adapter(who: Principal, name: str) -> bool:
    """Per-user adapters name their user: shown to that user and the admin, never anonymously."""
    if who.kind == "anonymous":
        return not name.startswith("user_")
    return visible_to(who, name)


_GENERATION_ERRORS = (403, 404, 429, 503)

ROUTES = [
    RouteDef(
        "POST",
        "/api/saigon/infer",
        infer,
        "saigon_infer",
        Access.TENANT,
        "Answer one request with the user's adapter and mesh context (streamed as server-sent events on request)",
        "saigon",
        request_model=SingleInferRequest,
        response_model=InferResponse,
        response_kind=ResponseKind.JSON_OR_SSE,
        stream_model=InferStreamEvent,
        errors=_GENERATION_ERRORS,
    ),
    RouteDef(
        "POST",
        "/api/saigon/infer/batch",
        infer_batch,
        "saigon_infer_batch",
        Access.TENANT,
        "Answer several requests together (mixed adapters share engine steps)",
        "saigon",
        request_model=BatchInferRequest,
        response_model=BatchInferResponse,
        errors=_GENERATION_ERRORS,
    ),
    RouteDef(
        "POST",
        "/api/saigon/adapters/hot-swap",
        hot_swap,
        "saigon_hot_swap",
        Access.ADMIN,
        "Import an adapter directory as the user's new version and serve it from now on",
        "saigon",
        request_model=HotSwapRequest,
        response_model=HotSwapResponse,
        errors=(400, 404, 422, 503),
    ),
    RouteDef(
        "GET",
        "/api/saigon/status",
        status,
        "saigon_status",
        Access.TENANT,
        "Engine, cache and adapter status",
        "saigon",
        response_model=StatusResponse,
    ),
]
