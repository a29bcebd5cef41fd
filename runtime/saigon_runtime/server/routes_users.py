"""Admin routes for per-user data that is not the user's own to change: their domain (which
`domain_<name>` adapter serves them when they have none of their own)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from saigon_runtime.mesh.schema import validate_user_id
from saigon_runtime.server.protocol import USER_ID_PATTERN, UserDomainRequest, UserDomainResponse, json_body
from saigon_runtime.server.routing import Access, RouteDef, parse_body
from saigon_runtime.server.state import state_of
from saigon_runtime.userstore import UserStore


def _store(request: web.Request) -> UserStore:
    return state_of(request).user_store("user_store_disabled")


async def get_domain(request: web.Request) -> web.Response:
    user_id = validate_user_id(request.match_info["user_id"])
    domain = await asyncio.to_thread(_store(request).domain_of, user_id)
    return web.json_response(json_body(UserDomainResponse(user_id=user_id, domain=domain)))


async def put_domain(request: web.Request) -> web.Response:
    user_id = validate_user_id(request.match_info["user_id"])
    body = await parse_body(request, UserDomainRequest)
    await asyncio.to_thread(_store(request).set_domain, user_id, body.domain)
    return web.json_response(json_body(UserDomainResponse(user_id=user_id, domain=body.domain)))


_PATH = "/admin/users/{user_id}/domain"
_PARAMS = {"user_id": USER_ID_PATTERN}

ROUTES = [
    RouteDef(
        "GET", _PATH, get_domain, "admin_get_user_domain", Access.ADMIN,
        "A user's domain in the user store", "admin",
        response_model=UserDomainResponse, errors=(409,), path_params=_PARAMS,
    ),
    RouteDef(
        "PUT", _PATH, put_domain, "admin_set_user_domain", Access.ADMIN,
        "Set (or clear, with null) a user's domain; every replica sees it within a second", "admin",
        request_model=UserDomainRequest, response_model=UserDomainResponse, errors=(409,), path_params=_PARAMS,
    ),
]  # fmt: skip
