"""vLLM's dynamic LoRA routes, so tools that drive vLLM (AIBrix, the Gateway API Inference
Extension's adapter syncer, scripts) can drive Saigon: POST /v1/load_lora_adapter and
/v1/unload_lora_adapter, with vLLM's request bodies and plain-text success messages, behind
the admin credential. A load imports `lora_path` as a new version of `lora_name` the same way
the admin API does (same checks, same atomic install) and makes it current.
"""

from __future__ import annotations

from aiohttp import web

from saigon_runtime.errors import AdapterNotFound, AdapterRejected
from saigon_runtime.server.errors import ApiError
from saigon_runtime.server.protocol import LoadLoraAdapterRequest, UnloadLoraAdapterRequest
from saigon_runtime.server.routes_admin import import_source, load_in_two_steps, off_loop
from saigon_runtime.server.routing import Access, ResponseKind, RouteDef, parse_body
from saigon_runtime.server.state import state_of


async def load_lora_adapter(request: web.Request) -> web.Response:
    body = await parse_body(request, LoadLoraAdapterRequest)
    state = state_of(request)
    engine = state.ready_engine()
    name = body.lora_name
    source = await import_source(state, body.lora_path, "lora_path")
    if engine.adapters.current_version(name) is not None and not body.load_inplace:
        raise ApiError(
            400,
            f"The lora adapter '{name}' has already been loaded. "
            "If you want to load the adapter in place, set 'load_inplace' to True.",
            param="lora_name",
            code="already_loaded",
        )
    try:
        await load_in_two_steps(state, engine, name, None, source)
    except (AdapterNotFound, AdapterRejected) as exc:  # vLLM answers a path it cannot load with 400
        raise ApiError(400, f"cannot load the adapter at lora_path: {exc}", param="lora_path", code=exc.kind) from None
    except ApiError as exc:
        raise ApiError(400, exc.message, param="lora_path", code=exc.code) from None
    return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")


async def unload_lora_adapter(request: web.Request) -> web.Response:
    body = await parse_body(request, UnloadLoraAdapterRequest)
    engine = state_of(request).ready_engine()
    name = body.lora_name
    if engine.adapters.current_version(name) is None:
        raise ApiError(404, f"The lora adapter '{name}' cannot be found.", param="lora_name", code="not_found")
    await off_loop(engine.adapters.unload, name, None)
    return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")


ROUTES = [
    RouteDef(
        "POST",
        "/v1/load_lora_adapter",
        load_lora_adapter,
        "vllm_load_lora_adapter",
        Access.ADMIN,
        "Load a LoRA adapter directory under a name (vLLM's API); answers a plain-text message",
        "admin",
        request_model=LoadLoraAdapterRequest,
        response_kind=ResponseKind.TEXT,
        errors=(503,),
    ),
    RouteDef(
        "POST",
        "/v1/unload_lora_adapter",
        unload_lora_adapter,
        "vllm_unload_lora_adapter",
        Access.ADMIN,
        "Stop serving a LoRA adapter (vLLM's API); answers a plain-text message",
        "admin",
        request_model=UnloadLoraAdapterRequest,
        response_kind=ResponseKind.TEXT,
        errors=(404, 503),
    ),
]
