"""What serves an OpenAI request: `model` names the base model, an adapter, or a user.

`user_<id>` means "this user's cascade": their own adapter, else their domain's, else `global`,
else the base model, with the reason for each step passed over. Any other adapter name is
served exactly (404 when it does not exist). Every answer names what served it in headers.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from aiohttp import web
from saigon_contract.names import is_scope_id

from saigon_runtime.adapters.manager import Resolution
from saigon_runtime.adapters.names import NAME_RE
from saigon_runtime.errors import AdapterNotFound
from saigon_runtime.server.auth import check_adapter_visible, principal
from saigon_runtime.server.demand import load_if_missing
from saigon_runtime.server.errors import ApiError
from saigon_runtime.server.state import state_of

USER_PREFIX = "user_"
ADAPTER_HEADER = "X-Saigon-Adapter"
VERSION_HEADER = "X-Saigon-Adapter-Version"
SCOPE_HEADER = "X-Saigon-Adapter-Scope"
FALLBACK_HEADER = "X-Saigon-Fallback-Reason"
MESH_HEADER = "X-Saigon-Mesh-Context"
MAX_HEADER_CHARS = 512
_UNSAFE_HEADER_CHARS = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True)
class Target:
    resolution: Resolution
    user_id: str | None  # whose data (mesh, audit) the request uses


async def resolve_target(request: web.Request, model: str, user_id: str | None) -> Target:
    engine = state_of(request).ready_engine()
    if model == engine.model_id:
        return Target(Resolution(None, "base"), user_id)
    owner = model.removeprefix(USER_PREFIX) if model.startswith(USER_PREFIX) else None
    if owner is not None and is_scope_id(owner):
        if user_id is not None and user_id != owner:
            status = 403 if principal(request).is_tenant else 400
            raise ApiError(status, f"model names another user than the one asking ({user_id!r})", param="model",
                           code="forbidden" if status == 403 else "user_mismatch")  # fmt: skip
        check_adapter_visible(request, model)
        await load_if_missing(state_of(request), owner)
        resolution = await asyncio.to_thread(engine.adapters.resolve, owner)
        return Target(resolution, owner)
    if not NAME_RE.fullmatch(model) or ".." in model:
        raise model_not_found(model)
    check_adapter_visible(request, model)
    try:
        resolution = await asyncio.to_thread(engine.adapters.resolve, None, model, strict=True)
    except AdapterNotFound:
        raise model_not_found(model) from None
    return Target(resolution, user_id)


def served_headers(resolution: Resolution, *, mesh_context_used: bool | None = None) -> dict[str, str]:
    """What answered: set once, before the body, so a response (or a stream) carries exactly one."""
    headers = {SCOPE_HEADER: resolution.scope}
    adapter = resolution.adapter
    if adapter is not None:
        headers[ADAPTER_HEADER] = adapter.name
        headers[VERSION_HEADER] = adapter.version
    if resolution.fallback_reason:
        headers[FALLBACK_HEADER] = header_text(resolution.fallback_reason)
    if mesh_context_used is not None:
        headers[MESH_HEADER] = "true" if mesh_context_used else "false"
    return headers


def header_text(text: str) -> str:
    """Printable ASCII, bounded: reasons can quote an adapter's refusal message."""
    clean = _UNSAFE_HEADER_CHARS.sub("?", text)
    return clean if len(clean) <= MAX_HEADER_CHARS else clean[: MAX_HEADER_CHARS - 3] + "..."


def model_not_found(model: str) -> ApiError:
    shown = model if len(model) <= 64 else model[:61] + "..."
    return ApiError(404, f"the model {shown!r} does not exist", param="model", code="model_not_found")
