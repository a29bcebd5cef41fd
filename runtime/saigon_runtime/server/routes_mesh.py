"""GET and PUT one user's mesh graph, in the user store (files or PostgreSQL). The JSON is
untrusted: the store schema-checks and size-caps it before writing; a tenant may only touch
their own graph, and with inference auth on an anonymous caller touches none."""

from __future__ import annotations

import asyncio

from aiohttp import web

from saigon_runtime.mesh.schema import validate_user_id
from saigon_runtime.server.auth import effective_user
from saigon_runtime.server.errors import ApiError
from saigon_runtime.server.protocol import USER_ID_PATTERN, MeshGraph, MeshPutResponse, json_body
from saigon_runtime.server.routing import Access, RouteDef
from saigon_runtime.server.state import state_of
from saigon_runtime.userstore import UserStore


def _store(request: web.Request) -> UserStore:
    return state_of(request).user_store()


def _user(request: web.Request) -> str:
    user_id = effective_user(request, validate_user_id(request.match_info["user_id"]))
    assert user_id is not None
    return user_id


async def get_mesh(request: web.Request) -> web.Response:
    user_id = _user(request)
    graph = await asyncio.to_thread(_store(request).get_mesh, user_id)
    if graph is None:
        raise ApiError(404, "this user has no mesh", code="mesh_not_found")
    return web.json_response(json_body(graph))


async def put_mesh(request: web.Request) -> web.Response:
    user_id = _user(request)
    store = _store(request)
    raw = await request.read()
    graph = await asyncio.to_thread(store.put_mesh, user_id, raw)
    return web.json_response(
        json_body(MeshPutResponse(user_id=user_id, nodes=len(graph.nodes), edges=len(graph.edges)))
    )


_PATH = "/api/saigon/mesh/{user_id}"
_PARAMS = {"user_id": USER_ID_PATTERN}

ROUTES = [
    RouteDef(
        "GET",
        _PATH,
        get_mesh,
        "mesh_get",
        Access.TENANT,
        "A user's mesh graph",
        "mesh",
        response_model=MeshGraph,
        errors=(404, 409),
        path_params=_PARAMS,
    ),
    RouteDef(
        "PUT",
        _PATH,
        put_mesh,
        "mesh_put",
        Access.TENANT,
        "Replace a user's mesh graph (validated, size-capped, written atomically)",
        "mesh",
        request_model=MeshGraph,
        response_model=MeshPutResponse,
        errors=(409,),
        path_params=_PARAMS,
    ),
]
