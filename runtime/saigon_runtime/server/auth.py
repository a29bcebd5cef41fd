"""Who is calling: deny by default, with an explicit allowlist.

Every matched route declares an `Access` level in the route table; a route without one is
refused. PUBLIC routes are open. TENANT routes (inference, a user's mesh) are open only while no
inference tokens are configured; otherwise they need one, whose user id then replaces any user
id in the body, or the admin token, which may act for any user. ADMIN routes need the admin
token and are refused outright when none is configured.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from saigon_runtime.server.errors import ApiError, forbidden, unauthorized
from saigon_runtime.server.routing import Access, Handler
from saigon_runtime.tokens import TokenFile


@dataclass(frozen=True)
class Principal:
    kind: Literal["anonymous", "user", "admin"]
    user_id: str | None = None

    @property
    def is_tenant(self) -> bool:
        return self.kind == "user"


ANONYMOUS = Principal("anonymous")
PRINCIPAL_KEY = web.RequestKey("saigon_principal", Principal)
ROUTE_ACCESS_KEY = web.AppKey("saigon_route_access", dict[web.AbstractRoute, Access])


@dataclass(frozen=True)
class Credentials:
    admin_token: str | None
    static_tokens: Mapping[str, str]  # token -> user id (SAIGON_INFERENCE_TOKENS)
    token_file: TokenFile | None = None  # re-read on change (a mounted Secret)

    @property
    def inference_tokens(self) -> Mapping[str, str]:
        if self.token_file is None:
            return self.static_tokens
        return {**self.static_tokens, **self.token_file.tokens()}

    @property
    def inference_auth(self) -> bool:
        # A configured tokens file turns auth on even while it lists nobody: closed, never open.
        return bool(self.static_tokens) or self.token_file is not None

    def admin(self, token: str | None) -> bool:
        return bool(self.admin_token) and token is not None and _equal(token, self.admin_token or "")

    def user_for(self, token: str | None) -> str | None:
        if token is None:
            return None
        found = None
        # Compare against every token (no early exit) so timing does not reveal which matched.
        for candidate, user_id in self.inference_tokens.items():
            if _equal(token, candidate):
                found = user_id
        return found


CREDENTIALS_KEY = web.AppKey("saigon_credentials", Credentials)


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(access: Access, credentials: Credentials, token: str | None) -> Principal:
    if access is Access.PUBLIC:
        return ANONYMOUS
    if access is Access.ADMIN:
        if not credentials.admin_token:
            raise forbidden("the admin API is disabled: no admin token is configured")
        if token is None:
            raise unauthorized("this route needs the admin bearer token")
        if not credentials.admin(token):
            raise unauthorized("invalid admin token")
        return Principal("admin")
    if token is not None and credentials.admin(token):
        return Principal("admin")  # the operator may act for any user (user id from the body)
    if not credentials.inference_auth:
        return ANONYMOUS
    if token is None:
        raise unauthorized("inference needs a bearer token")
    user_id = credentials.user_for(token)
    if user_id is None:
        raise unauthorized("invalid bearer token")
    return Principal("user", user_id)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    match = request.match_info
    if match.http_exception is not None:
        # No route matched (404/405): nothing to protect, let the router answer.
        return await handler(request)
    access = request.app[ROUTE_ACCESS_KEY].get(match.route)
    if access is None:
        raise forbidden("route is not on the access list")
    request[PRINCIPAL_KEY] = authenticate(access, request.app[CREDENTIALS_KEY], bearer_token(request))
    return await handler(request)


def principal(request: web.Request) -> Principal:
    return request.get(PRINCIPAL_KEY, ANONYMOUS)


def effective_user(request: web.Request, claimed: str | None, *, field: str = "user_id") -> str | None:
    """The user a TENANT request acts for: the token's user when auth is on, else the body's."""
    who = principal(request)
    if not who.is_tenant:
        return claimed
    if claimed is not None and claimed != who.user_id:
        raise ApiError(403, f"{field} does not match the authenticated user", param=field, code="forbidden")
    return who.user_id


def check_adapter_visible(request: web.Request, adapter_name: str, *, field: str = "model") -> None:
    """A tenant may use shared adapters and their own user adapter, never another user's."""
    if not visible_to(principal(request), adapter_name):
        raise ApiError(403, "that adapter belongs to another user", param=field, code="forbidden")


def visible_to(who: Principal, adapter_name: str) -> bool:
    if not who.is_tenant or not adapter_name.startswith("user_"):
        return True
    return adapter_name == f"user_{who.user_id}"
