"""Every error leaves the server as OpenAI-shaped JSON: {"error": {"type", "message", "param", "code"}}.

`error_middleware` maps what handlers raise: ApiError (raised by this package), the engine's
EngineError and the mesh's MeshError (both carry `.status`), aiohttp's HTTP exceptions (404, 405,
413 from the body limit) and, last, anything unexpected (500, logged, details withheld).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from pydantic import ValidationError

from saigon_runtime.errors import EngineBusy, EngineError
from saigon_runtime.mesh.schema import MeshError
from saigon_runtime.server.protocol import ErrorDetail, ErrorResponse

log = logging.getLogger(__name__)

# OpenAI's error types where it has one; the others name the condition plainly.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "method_not_allowed",
    409: "conflict_error",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error with its HTTP status, raised by handlers and turned into a JSON response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or ERROR_TYPES.get(status, "error")
        self.param = param
        self.code = code
        self.headers = dict(headers or {})


def error_response(error: ApiError) -> web.Response:
    body = ErrorResponse(error=ErrorDetail(type=error.type, message=error.message, param=error.param, code=error.code))
    return web.json_response(body.model_dump(mode="json"), status=error.status, headers=error.headers)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def forbidden(message: str) -> ApiError:
    return ApiError(403, message, code="forbidden")


def from_validation_error(exc: ValidationError, body: object = None) -> ApiError:
    """A body that is JSON but not the expected shape: 400 (as OpenAI answers), naming the offending
    field. Given the parsed `body`, the field is named as it is in the body (pydantic's union branch
    tags left out), and of several errors the deepest in the body wins: under a union (a message's
    content: a string or a list of parts) that is the branch the body meant."""
    errors = exc.errors(include_url=False, include_input=False)
    if any(err["type"] == "json_invalid" for err in errors):
        return ApiError(400, "request body is not valid JSON", code="invalid_json")
    located = [(_path_in(body, err["loc"]) if body is not None else list(err["loc"]), err) for err in errors]
    path, first = max(located, key=lambda pair: len(pair[0]))  # the first of the deepest
    param = ".".join(str(part) for part in path) or None
    more = len(errors) - 1
    unknown = first["type"] == "extra_forbidden"
    detail = "is not a parameter this server supports" if unknown else first["msg"]
    message = f"{param}: {detail}" if param else detail
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ApiError(400, message, param=param, code="unsupported_parameter" if unknown else "invalid_value")


def _path_in(body: object, loc: tuple[int | str, ...]) -> list[int | str]:
    """The parts of `loc` that step into `body` (a union's branch tag does not), plus a last part
    that names a field the body has not got (a missing one)."""
    path: list[int | str] = []
    node = body
    for part in loc:
        in_object = isinstance(node, dict) and part in node
        in_array = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_object or in_array:
            node = node[part]  # type: ignore[index]
        elif not (part == loc[-1] and isinstance(node, dict)):
            continue  # a union's branch tag; the last part of a missing field's location is kept
        path.append(part)
    return path


def from_engine_error(exc: EngineError) -> ApiError:
    headers = {}
    if isinstance(exc, EngineBusy):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    return ApiError(
        exc.status,
        str(exc) or exc.kind,
        type=_type_for(exc.status, exc.kind),
        param=getattr(exc, "param", None),
        code=exc.kind,
        headers=headers,
    )


def from_mesh_error(exc: MeshError) -> ApiError:
    return ApiError(exc.status, str(exc), code=exc.kind, param="mesh")


def _type_for(status: int, kind: str) -> str:
    return ERROR_TYPES.get(status, kind)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except EngineError as exc:
        return error_response(from_engine_error(exc))
    except MeshError as exc:
        return error_response(from_mesh_error(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
        message = _http_message(exc)
        return error_response(ApiError(exc.status, message, headers=headers))
    except ConnectionResetError:
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, _route_label(request))
        return error_response(ApiError(500, "internal server error", code="internal_error"))


def _http_message(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "no such route"
    if exc.status == 405:
        return f"method not allowed; allowed: {exc.headers.get('Allow', '')}"
    if exc.status == 413:
        return "request body is larger than the server's limit"
    return exc.reason


def _route_label(request: web.Request) -> str:
    """The route template (never the concrete path: it may hold a user id)."""
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"
