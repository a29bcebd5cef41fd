"""The route table: one `RouteDef` per endpoint, read by the app (routing, auth) and by the
OpenAPI generator, so what is served, who may call it and what is documented cannot drift apart."""

from __future__ import annotations

import enum
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from saigon_runtime.server.errors import ApiError, from_validation_error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)


class Access(enum.Enum):
    PUBLIC = "public"  # health, readiness, metrics, the OpenAPI document
    TENANT = "tenant"  # inference and a user's own data: open only while inference auth is off
    ADMIN = "admin"  # needs the admin bearer token; denied when none is configured


class ResponseKind(enum.Enum):
    JSON = "json"
    JSON_OR_SSE = "json_or_sse"  # JSON, or server-sent events when the body asks to stream
    TEXT = "text"
    JSON_OBJECT = "json_object"  # a JSON object without a model of its own (the OpenAPI document)


@dataclass(frozen=True)
class RouteDef:
    method: str
    path: str
    handler: Handler
    name: str  # bounded metric label and OpenAPI operationId
    access: Access
    summary: str
    tag: str
    request_model: type[BaseModel] | None = None
    response_model: type[BaseModel] | None = None
    response_kind: ResponseKind = ResponseKind.JSON
    stream_model: type[BaseModel] | None = None  # the JSON of each SSE event
    errors: tuple[int, ...] = ()
    error_models: dict[int, type[BaseModel]] = field(default_factory=dict)  # statuses not using ErrorResponse
    path_params: dict[str, str] = field(default_factory=dict)  # name -> regex


async def parse_body(request: web.Request, model: type[M]) -> M:
    """Read and validate a JSON body: 400 when it is not a JSON object or breaks the schema."""
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise from_validation_error(exc, _parsed(raw)) from None


def _parsed(raw: bytes) -> object:
    """The body as JSON, to name a refused field as the body spells it (None if it is not JSON, or
    nests deeper than Python's parser goes)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None
