"""GET /v1/models and /v1/models/{model}: the base model and the adapters that can serve now.

As vLLM gives them: the base has `root` = its model path and no `parent`; an adapter has
`parent` = the base model's id and `root` = the directory of the version it serves. An adapter
that failed to load (corrupt, unsafe, incompatible) is not offered.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from saigon_runtime.adapters.manager import AdapterInfo
from saigon_runtime.engine.engine import Engine
from saigon_runtime.server.auth import principal, visible_to
from saigon_runtime.server.cascade import model_not_found
from saigon_runtime.server.protocol import ModelCard, ModelList, json_body
from saigon_runtime.server.routing import Access, RouteDef
from saigon_runtime.server.state import ServerState, state_of

OWNER = "saigon"


def _base_card(state: ServerState, engine: Engine) -> ModelCard:
    root = str(state.config.base_model_dir) if state.config.base_model_dir is not None else engine.model_id
    return ModelCard(id=engine.model_id, created=int(state.started_at), owned_by=OWNER, parent=None, root=root)


def _adapter_card(state: ServerState, engine: Engine, info: AdapterInfo) -> ModelCard:
    store = engine.adapters.store
    assert info.version is not None
    root = str(store.root / info.name / info.version) if store is not None else info.name
    created = int(info.loaded_at or state.started_at)
    return ModelCard(id=info.name, created=created, owned_by=OWNER, parent=engine.model_id, root=root)


def _servable(info: AdapterInfo, engine: Engine) -> bool:
    return info.version is not None and info.error is None and info.name != engine.model_id


async def list_models(request: web.Request) -> web.Response:
    state = state_of(request)
    engine = state.ready_engine()
    who = principal(request)
    infos = await asyncio.to_thread(engine.adapters.list_adapters)
    cards = [_base_card(state, engine)]
    cards += [_adapter_card(state, engine, i) for i in infos if _servable(i, engine) and visible_to(who, i.name)]
    return web.json_response(json_body(ModelList(data=cards)))


async def get_model(request: web.Request) -> web.Response:
    state = state_of(request)
    engine = state.ready_engine()
    model = request.match_info["model"]
    if model == engine.model_id:
        return web.json_response(json_body(_base_card(state, engine)))
    if not visible_to(principal(request), model):
        raise model_not_found(model)  # another user's adapter: not even its existence is told
    try:
        info = await asyncio.to_thread(engine.adapters.info, model)
    except Exception:  # a name the adapter layer refuses is simply not a model here
        raise model_not_found(model) from None
    if not _servable(info, engine):
        raise model_not_found(model)
    return web.json_response(json_body(_adapter_card(state, engine, info)))


ROUTES = [
    RouteDef(
        "GET",
        "/v1/models",
        list_models,
        "openai_models",
        Access.TENANT,
        "The base model and the adapters that can serve, each adapter with its parent",
        "openai",
        response_model=ModelList,
        errors=(503,),
    ),
    RouteDef(
        "GET",
        "/v1/models/{model}",
        get_model,
        "openai_model",
        Access.TENANT,
        "One model: the base or a servable adapter",
        "openai",
        response_model=ModelCard,
        errors=(404, 503),
        path_params={"model": r"^[^/]{1,256}$"},
    ),
]
