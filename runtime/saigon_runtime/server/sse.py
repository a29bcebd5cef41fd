"""Server-sent events as OpenAI streams them: `data: <json>` events, then `data: [DONE]`."""

from __future__ import annotations

import json

from aiohttp import web
from pydantic import BaseModel

from saigon_runtime.server.errors import ApiError

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # proxies must not hold events back
}


async def open_event_stream(request: web.Request, headers: dict[str, str] | None = None) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={**SSE_HEADERS, **(headers or {})})
    await response.prepare(request)
    return response


async def send_event(response: web.StreamResponse, payload: BaseModel) -> None:
    await response.write(b"data: " + payload.model_dump_json().encode() + b"\n\n")


async def send_error(response: web.StreamResponse, error: ApiError) -> None:
    """An error after the stream started: the status line is gone, so it travels as an event."""
    body = {"error": {"type": error.type, "message": error.message, "param": error.param, "code": error.code}}
    await response.write(b"data: " + json.dumps(body).encode() + b"\n\n")


async def send_done(response: web.StreamResponse) -> None:
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
