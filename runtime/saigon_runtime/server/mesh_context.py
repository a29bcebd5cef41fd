"""Mesh context on the OpenAI routes: opt-in per request (`mesh_context` in the body, which the
openai client sends with `extra_body`), else the model's default (SAIGON_MESH_DEFAULT). The
retrieval, token budget and delimiting are the original API's (InferenceService.mesh_context and
saigon_runtime.mesh.prompt)."""

from __future__ import annotations

import asyncio

from saigon_runtime.mesh.prompt import context_block
from saigon_runtime.mesh.tokenizer import special_tokens
from saigon_runtime.server.errors import ApiError
from saigon_runtime.server.state import ServerState

FIELD = "mesh_context"


def mesh_wanted(state: ServerState, requested: bool | None, user_id: str | None) -> bool:
    """Whether to add context; asking for it explicitly where it cannot be given is a 400."""
    if requested is None:
        return state.config.mesh_default and user_id is not None and state.users is not None
    if requested and user_id is None:
        raise ApiError(
            400, f"{FIELD} needs a user: a credential, the user field or X-Saigon-User", param=FIELD, code="no_user"
        )
    if requested and state.users is None:
        raise ApiError(400, f"{FIELD}: this runtime has no user store", param=FIELD, code="mesh_disabled")
    return requested


async def context_for(state: ServerState, user_id: str | None, query: str, wanted: bool) -> str | None:
    """The user's context for `query` (read off the event loop: the store may be a database)."""
    if not wanted:
        return None
    return await asyncio.to_thread(state.ready_service().mesh_context, user_id, query)


def with_context(state: ServerState, prompt: str, context: str | None) -> str:
    """A raw completion prompt with the delimited context block in front."""
    if context is None:
        return prompt
    engine = state.ready_engine()
    return f"{context_block(context, special_tokens(engine.tokenizer))}\n\n{prompt}"
