"""The OpenAPI 3.1 document, generated from the route table and the pydantic models.

Generated per app, so it says exactly what that server does: which routes need which bearer
token depends on whether inference auth is configured.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from saigon_runtime.server.protocol import ErrorResponse
from saigon_runtime.server.routing import Access, ResponseKind, RouteDef

REF_TEMPLATE = "#/components/schemas/{model}"

_ERROR_DESCRIPTIONS = {
    400: "Malformed request: not a JSON object, a field that breaks the schema, or a value the server cannot use",
    401: "Missing or invalid bearer token",
    403: "Authenticated, but not allowed",
    404: "No such model, adapter or resource",
    409: "Conflicts with the current state",
    413: "Request body larger than the server's limit",
    422: "The adapter was rejected (corrupt, unsafe or incompatible)",
    429: "Queue full; retry after the number of seconds in Retry-After",
    503: "Not ready, or shutting down",
}


def build_openapi(routes: list[RouteDef], *, inference_auth: bool, version: str) -> dict[str, Any]:
    schemas, refs = _component_schemas(routes)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs, inference_auth)
    security_schemes: dict[str, Any] = {
        "adminToken": {"type": "http", "scheme": "bearer", "description": "SAIGON_ADMIN_TOKEN"}
    }
    if inference_auth:
        security_schemes["inferenceToken"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "a token from SAIGON_INFERENCE_TOKENS; it names the user",
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Saigon runtime",
            "version": version,
            "description": "One base model, many LoRA adapters: the original Saigon API, an "
            "OpenAI-compatible API and the admin API the agent sidecar uses.",
        },
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": security_schemes},
    }


def _component_schemas(
    routes: list[RouteDef],
) -> tuple[dict[str, Any], dict[tuple[type[BaseModel], str], dict[str, Any]]]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorResponse, "serialization")]
    for route in routes:
        if route.request_model is not None:
            wanted.append((route.request_model, "validation"))
        for model in (route.response_model, route.stream_model, *route.error_models.values()):
            if model is not None:
                wanted.append((model, "serialization"))
    unique = list(dict.fromkeys(wanted))
    refs, top = models_json_schema(unique, ref_template=REF_TEMPLATE)
    return top.get("$defs", {}), {(m, mode): ref for (m, mode), ref in refs.items()}  # type: ignore[misc]


def _operation(
    route: RouteDef, refs: dict[tuple[type[BaseModel], str], dict[str, Any]], inference_auth: bool
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "tags": [route.tag],
        "responses": _responses(route, refs, inference_auth),
    }
    if route.path_params:
        operation["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": pattern}}
            for name, pattern in route.path_params.items()
        ]
    if route.request_model is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(route.request_model, "validation")]}},
        }
    security = _security(route.access, inference_auth)
    operation["security"] = security
    return operation


def _security(access: Access, inference_auth: bool) -> list[dict[str, list[str]]]:
    if access is Access.ADMIN:
        return [{"adminToken": []}]
    if access is Access.TENANT and inference_auth:
        return [{"inferenceToken": []}]
    return []


def _responses(
    route: RouteDef, refs: dict[tuple[type[BaseModel], str], dict[str, Any]], inference_auth: bool
) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "OK"}
    if route.response_kind is ResponseKind.TEXT:
        ok["content"] = {"text/plain": {"schema": {"type": "string"}}}
    elif route.response_kind is ResponseKind.JSON_OBJECT:
        ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    else:
        assert route.response_model is not None, route.name
        ok["content"] = {"application/json": {"schema": refs[(route.response_model, "serialization")]}}
        if route.response_kind is ResponseKind.JSON_OR_SSE:
            assert route.stream_model is not None, route.name
            ok["content"]["text/event-stream"] = {
                "schema": _event_schema(refs[(route.stream_model, "serialization")], refs)
            }
    responses: dict[str, Any] = {"200": ok}
    for status in sorted(set(route.errors) | _implied_errors(route, inference_auth)):
        responses[str(status)] = _error_response(status, refs)
    for status, model in route.error_models.items():
        responses[str(status)] = {
            "description": _ERROR_DESCRIPTIONS.get(status, "Error"),
            "content": {"application/json": {"schema": refs[(model, "serialization")]}},
        }
    return responses


def _event_schema(chunk_ref: dict[str, Any], refs: dict[tuple[type[BaseModel], str], dict[str, Any]]) -> dict[str, Any]:
    """One server-sent event (OpenAPI 3.1 reads an event-stream schema per event): `data` is a
    JSON chunk, an error that happened after the stream started, or the final `[DONE]`."""
    return {
        "type": "object",
        "description": "Sent when `stream` is true: one event per chunk, then `data: [DONE]`.",
        "required": ["data"],
        "properties": {
            "event": {"type": "string"},
            "data": {
                "type": "string",
                "if": {"const": "[DONE]"},
                "else": {
                    "contentMediaType": "application/json",
                    "contentSchema": {"anyOf": [chunk_ref, refs[(ErrorResponse, "serialization")]]},
                },
            },
        },
    }


def _implied_errors(route: RouteDef, inference_auth: bool) -> set[int]:
    statuses: set[int] = set()
    if route.request_model is not None:
        statuses |= {400, 413, 422}  # 422: the adapter the request names was rejected
    if route.path_params:
        statuses.add(400)
    if route.access is Access.ADMIN or (route.access is Access.TENANT and inference_auth):
        statuses |= {401, 403}
    return statuses


def _error_response(status: int, refs: dict[tuple[type[BaseModel], str], dict[str, Any]]) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _ERROR_DESCRIPTIONS.get(status, "Error"),
        "content": {"application/json": {"schema": refs[(ErrorResponse, "serialization")]}},
    }
    if status == 429:
        response["headers"] = {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "string", "pattern": r"^\d+$"}}
        }
    return response
