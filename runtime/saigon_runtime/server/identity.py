"""Who is asking, resolved the same way on every route.

With inference auth on, the user is the credential's: a user id in the body or the
`X-Saigon-User` header must agree with it (403 otherwise). Without auth (the local demo) or for
the admin token (which may act for anyone), the user is the body's user field or, failing that,
the `X-Saigon-User` header, which is also what the router hashes on for affinity; when both are
given they must agree (400). Every user id is checked as a full match of the path-safe pattern.
"""

from __future__ import annotations

from aiohttp import web
from saigon_contract.haproxy import DEFAULT_USER_HEADER
from saigon_contract.names import is_scope_id

from saigon_runtime.mesh.schema import InvalidUserId, validate_user_id
from saigon_runtime.server.auth import principal
from saigon_runtime.server.errors import ApiError

# What the router hashes on by default.
USER_HEADER = DEFAULT_USER_HEADER


def header_user(request: web.Request) -> str | None:
    raw = request.headers.get(USER_HEADER)
    if raw is None:
        return None
    return _checked(raw, USER_HEADER)


def caller_user(request: web.Request, claimed: str | None = None, *, field: str = "user") -> str | None:
    """The user this request acts for (None: nobody in particular)."""
    if claimed is not None:
        _checked(claimed, field)
    from_header = header_user(request)
    who = principal(request)
    if who.is_tenant:
        for value, name in ((claimed, field), (from_header, USER_HEADER)):
            if value is not None and value != who.user_id:
                raise ApiError(403, f"{name} does not match the authenticated user", param=name, code="forbidden")
        return who.user_id
    if claimed is not None and from_header is not None and claimed != from_header:
        raise ApiError(400, f"{field} and {USER_HEADER} name different users", param=field, code="user_mismatch")
    return claimed if claimed is not None else from_header


def openai_user(tag: str | None) -> str | None:
    """OpenAI's `user` field is any string (an end-user tag for the provider). A user id names
    that Saigon user (their cascade, mesh and audit); any other tag (an e-mail, a display name)
    does not name one, and is not logged."""
    return tag if tag is not None and is_scope_id(tag) else None


def user_may_act_as(request: web.Request, user_id: str, *, param: str) -> None:
    """A tenant may act only for themselves (their adapter, their mesh)."""
    who = principal(request)
    if who.is_tenant and user_id != who.user_id:
        raise ApiError(403, "that belongs to another user", param=param, code="forbidden")


def _checked(value: str, name: str) -> str:
    try:
        return validate_user_id(value)
    except InvalidUserId:
        raise ApiError(
            400, f"{name} is not a valid user id ([A-Za-z0-9][A-Za-z0-9_.-]{{0,63}})", param=name, code="invalid_user"
        ) from None
