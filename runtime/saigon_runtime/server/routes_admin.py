"""The admin API the agent sidecar calls on localhost: list, load, unload and pin adapters.

Every route needs the admin bearer token (see auth.py). Manager calls may touch the disk, so
they run in a worker thread; a bad adapter fails alone with 404/422 and never stops serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from saigon_contract.background import BackgroundPool

from saigon_runtime.adapters.store import within
from saigon_runtime.adapters.types import AdapterRef
from saigon_runtime.engine.types import GenerationRequest, SamplingParams, new_request_id
from saigon_runtime.server.errors import ApiError
from saigon_runtime.server.protocol import (
    AdapterEvalRequest,
    AdapterEvalResponse,
    AdapterInfoModel,
    AdapterListResponse,
    AdapterLoadRequest,
    AdapterLoadResponse,
    AdapterPinRequest,
    AdapterPinResponse,
    AdapterStatsRequest,
    AdapterStatsResponse,
    AdapterUnloadRequest,
    AdapterUnloadResponse,
    EvalPrompt,
    EvalResult,
    VersionStatsModel,
    json_body,
)
from saigon_runtime.server.routing import Access, RouteDef, parse_body
from saigon_runtime.server.state import ServerState, state_of

if TYPE_CHECKING:
    from saigon_runtime.adapters.manager import AdapterInfo
    from saigon_runtime.engine.engine import Engine

T = TypeVar("T")


async def off_loop(fn: Callable[..., T], *args: Any, pool: BackgroundPool | None = None) -> T:
    """`pool`: one of the state's bounded pools for adapter loads; else a plain thread."""
    try:
        return await (pool.run(fn, *args) if pool is not None else asyncio.to_thread(fn, *args))
    except OSError as exc:
        # An unreadable path (too long, permission denied...) is the caller's problem, not a 500.
        reason = exc.strerror or type(exc).__name__
        raise ApiError(422, f"cannot read the adapter: {reason}", code="adapter_rejected") from None


async def load_in_two_steps(
    state: ServerState, engine: Engine, name: str, version: str | None, source: Path | None
) -> AdapterInfo:
    """An admin load: the files read and validated at a lower CPU priority, then the device slot
    warmed and the version made current at serving's priority (AdapterManager.prepare, commit)."""
    ref = await off_loop(engine.adapters.prepare, name, version, source, pool=state.preparer)
    return await off_loop(engine.adapters.commit, ref, pool=state.loader)


async def import_source(state: ServerState, raw: str | None, field: str) -> Path | None:
    """The directory an admin call may import from: inside the adapters or the staging directory."""
    if raw is None:
        return None
    roots = [root for root in (state.config.adapters_dir, state.config.staging_dir) if root is not None]
    resolved = await off_loop(within, Path(raw), roots)
    if resolved is None:
        raise ApiError(
            400,
            f"{field} must lie inside the adapters directory or the staging directory (SAIGON_STAGING_DIR)",
            param=field,
            code="path_not_allowed",
        )
    return resolved


def info_model(info: Any) -> AdapterInfoModel:
    return AdapterInfoModel(
        name=info.name,
        version=info.version,
        active_version=info.active_version,
        tier=info.tier,
        pinned=info.pinned,
        loaded_at=info.loaded_at,
        error=info.error,
    )


async def list_adapters(request: web.Request) -> web.Response:
    engine = state_of(request).ready_engine()
    infos = await off_loop(engine.adapters.list_adapters)
    return web.json_response(json_body(AdapterListResponse(adapters=[info_model(i) for i in infos])))


async def load_adapter(request: web.Request) -> web.Response:
    body = await parse_body(request, AdapterLoadRequest)
    state = state_of(request)
    engine = state.ready_engine()
    source = await import_source(state, body.path, "path")
    info = await load_in_two_steps(state, engine, body.name, body.version, source)
    assert info.version is not None
    if body.name in state.config.required_adapters:
        state.loaded_required.add(body.name)
    return web.json_response(
        json_body(AdapterLoadResponse(name=info.name, version=info.version, loaded_at=info.loaded_at))
    )


async def unload_adapter(request: web.Request) -> web.Response:
    body = await parse_body(request, AdapterUnloadRequest)
    state = state_of(request)
    engine = state.ready_engine()
    await off_loop(engine.adapters.unload, body.name, body.version)
    if engine.adapters.current_version(body.name) is None:
        state.loaded_required.discard(body.name)
    return web.json_response(json_body(AdapterUnloadResponse(name=body.name, version=body.version, unloaded=True)))


async def pin_adapter(request: web.Request) -> web.Response:
    body = await parse_body(request, AdapterPinRequest)
    engine = state_of(request).ready_engine()
    await off_loop(engine.adapters.pin, body.name, body.pinned)
    return web.json_response(json_body(AdapterPinResponse(name=body.name, pinned=body.pinned)))


async def evaluate_adapter(request: web.Request) -> web.Response:
    """Greedy answers of one adapter version to a few prompts, pinned to that version.

    Promotion gates use it to judge a candidate before (or while) it serves traffic; the
    answers go back to the agent only, and the requests do not count in the version's figures.
    """
    body = await parse_body(request, AdapterEvalRequest)
    state = state_of(request)
    engine = state.ready_engine()
    service = state.ready_service()
    # 404 / 422 before any generation; the ref holds its version, so an unload meanwhile can't fail it.
    ref = await off_loop(engine.adapters.held, AdapterRef(body.name, body.version), pool=state.preparer)

    async def one(item: EvalPrompt) -> EvalResult:
        ids = await state.tokenizing(service.encode, item.prompt)
        sampling = SamplingParams(temperature=0.0, max_new_tokens=service.max_new_tokens(len(ids), item.max_tokens))
        handle = engine.submit(GenerationRequest(ids, ref, sampling, request_id=new_request_id("eval")))
        result = await handle.wait()
        if result.failed:
            raise ApiError(500, "generation failed", code="generation_failed")
        loss = None
        if item.completion is not None:
            completion_ids = await state.tokenizing(_completion_ids, engine, item.completion)
            if not completion_ids:
                raise ApiError(400, "the completion is empty once tokenized", param="completion")
            loss = await off_loop(engine.score, ids, completion_ids, ref)
        return EvalResult(output=result.text, completion_tokens=result.completion_tokens, loss=loss)

    results = await asyncio.gather(*(one(p) for p in body.prompts))
    return web.json_response(json_body(AdapterEvalResponse(name=body.name, version=body.version, results=results)))


def _completion_ids(engine: Any, completion: str) -> list[int]:
    return list(engine.tokenizer.encode(completion, add_special_tokens=False))


async def adapter_stats(request: web.Request) -> web.Response:
    body = await parse_body(request, AdapterStatsRequest)
    state = state_of(request)
    versions = [VersionStatsModel(**vars(f)) for f in state.versions.of(body.name)]
    return web.json_response(json_body(AdapterStatsResponse(name=body.name, versions=versions)))


ROUTES = [
    RouteDef(
        "GET",
        "/admin/adapters",
        list_adapters,
        "admin_list_adapters",
        Access.ADMIN,
        "List adapters with their versions, tier and pin state",
        "admin",
        response_model=AdapterListResponse,
        errors=(503,),
    ),
    RouteDef(
        "POST",
        "/admin/adapters/load",
        load_adapter,
        "admin_load_adapter",
        Access.ADMIN,
        "Validate and load an adapter version, then make it current atomically",
        "admin",
        request_model=AdapterLoadRequest,
        response_model=AdapterLoadResponse,
        errors=(400, 404, 422, 503),
    ),
    RouteDef(
        "POST",
        "/admin/adapters/unload",
        unload_adapter,
        "admin_unload_adapter",
        Access.ADMIN,
        "Stop serving an adapter (or one version) and free its memory",
        "admin",
        request_model=AdapterUnloadRequest,
        response_model=AdapterUnloadResponse,
        errors=(404, 503),
    ),
    RouteDef(
        "POST",
        "/admin/adapters/pin",
        pin_adapter,
        "admin_pin_adapter",
        Access.ADMIN,
        "Pin an adapter in a device slot, or release the pin",
        "admin",
        request_model=AdapterPinRequest,
        response_model=AdapterPinResponse,
        errors=(404, 409, 503),
    ),
    RouteDef(
        "POST",
        "/admin/adapters/evaluate",
        evaluate_adapter,
        "admin_evaluate_adapter",
        Access.ADMIN,
        "Answer prompts greedily with one adapter version, current or not (promotion gates)",
        "admin",
        request_model=AdapterEvalRequest,
        response_model=AdapterEvalResponse,
        errors=(404, 422, 503),
    ),
    RouteDef(
        "POST",
        "/admin/adapters/stats",
        adapter_stats,
        "admin_adapter_stats",
        Access.ADMIN,
        "Requests, errors and latency per version of one adapter (promotion gates)",
        "admin",
        request_model=AdapterStatsRequest,
        response_model=AdapterStatsResponse,
    ),
]
