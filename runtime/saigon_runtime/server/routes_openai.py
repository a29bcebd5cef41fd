"""The OpenAI-compatible API: /v1/models, /v1/completions and /v1/chat/completions, with
server-sent-event streaming and `usage`. `model` names an adapter, the base model or a user
(`user_<id>`: that user's cascade); the user is resolved by server.identity, the mesh context is
opt-in (server.mesh_context); the official `openai` client works unchanged against these routes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from aiohttp import web
from pydantic import BaseModel

from saigon_runtime.engine.types import GenerationRequest, GenerationResult, SamplingParams, new_request_id
from saigon_runtime.errors import EngineError
from saigon_runtime.mesh.prompt import build_chat_prompt
from saigon_runtime.server.auth import principal, visible_to
from saigon_runtime.server.cascade import Target, resolve_target, served_headers
from saigon_runtime.server.errors import ApiError, from_engine_error
from saigon_runtime.server.generation import Generation, record_served, submit
from saigon_runtime.server.identity import caller_user
from saigon_runtime.server.mesh_context import context_for, mesh_wanted, with_context
from saigon_runtime.server.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    FinishReason,
    ModelCard,
    ModelList,
    Usage,
    json_body,
)
from saigon_runtime.server.routing import Access, ResponseKind, RouteDef, parse_body
from saigon_runtime.server.sse import open_event_stream, send_done, send_error, send_event
from saigon_runtime.server.state import ServerState, state_of
from saigon_runtime.service import Prepared, audit_metadata

OWNER = "saigon"


async def list_models(request: web.Request) -> web.Response:
    state = state_of(request)
    engine = state.ready_engine()
    who = principal(request)
    infos = await asyncio.to_thread(engine.adapters.list_adapters)
    created = int(state.started_at)
    cards = [ModelCard(id=engine.model_id, created=created, owned_by=OWNER, parent=None, root=engine.model_id)]
    for info in infos:
        if info.version is None or info.name == engine.model_id or not visible_to(who, info.name):
            continue
        cards.append(
            ModelCard(
                id=info.name,
                created=int(info.loaded_at or created),
                owned_by=OWNER,
                parent=engine.model_id,
                root=info.name,
            )
        )
    return web.json_response(json_body(ModelList(data=cards)))


def _finish_reason(result: GenerationResult) -> FinishReason:
    return "length" if result.finish_reason == "length" else "stop"


def _usage(result: GenerationResult) -> Usage:
    return Usage(
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        total_tokens=result.prompt_tokens + result.completion_tokens,
    )


def _check_result(result: GenerationResult) -> None:
    if result.failed:
        raise ApiError(500, "generation failed", code="generation_failed")


async def completions(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, CompletionRequest)
    state = state_of(request)
    target = await resolve_target(request, body.model, caller_user(request, body.user))
    wanted = mesh_wanted(state, body.mesh_context, target.user_id)
    context = await context_for(state, target.user_id, body.prompt, wanted)
    prompt = with_context(state, body.prompt, context)
    prepared = _prepare(state, target, prompt, body, body.max_tokens, "cmpl", context is not None, body.prompt, None)
    request_id = prepared.request_id
    gen = submit(state, prepared.request, stream=body.stream)
    created = int(time.time())

    def chunk(text: str, finish: FinishReason | None) -> CompletionResponse:
        choice = CompletionChoice(index=0, text=text, finish_reason=finish)
        return CompletionResponse(id=request_id, created=created, model=body.model, choices=[choice])

    def usage_chunk(usage: Usage) -> CompletionResponse:
        return CompletionResponse(id=request_id, created=created, model=body.model, choices=[], usage=usage)

    def final(result: GenerationResult) -> CompletionResponse:
        completion = chunk(result.text, _finish_reason(result))
        completion.usage = _usage(result)
        return completion

    return await _serve(
        request, state, prepared, gen, body,
        first=None,
        delta=lambda text: chunk(text, None),
        last=lambda result: chunk("", _finish_reason(result)),
        usage=usage_chunk,
        final=final,
    )  # fmt: skip


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, ChatCompletionRequest)
    state = state_of(request)
    target = await resolve_target(request, body.model, caller_user(request, body.user))
    engine = state.ready_engine()
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    users_turns = [m["content"] for m in messages if m["role"] == "user"]
    query = users_turns[-1] if users_turns else ""
    wanted = mesh_wanted(state, body.mesh_context, target.user_id)
    context = await context_for(state, target.user_id, query, wanted)
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    try:
        prompt = build_chat_prompt(engine.tokenizer, messages, context=context)
    except Exception as exc:  # a template that refuses this conversation (e.g. role order)
        raise ApiError(
            400,
            f"the conversation does not fit the model's chat template ({type(exc).__name__})",
            param="messages",
            code="bad_messages",
        ) from None
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    prepared = _prepare(state, target, prompt, body, requested, "chatcmpl", context is not None, query, system)
    request_id = prepared.request_id
    gen = submit(state, prepared.request, stream=body.stream)
    created = int(time.time())

    def chunk(delta: ChatDelta, finish: FinishReason | None) -> ChatCompletionChunk:
        choice = ChatChunkChoice(index=0, delta=delta, finish_reason=finish)
        return ChatCompletionChunk(id=request_id, created=created, model=body.model, choices=[choice])

    def usage_chunk(usage: Usage) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=request_id, created=created, model=body.model, choices=[], usage=usage)

    def final(result: GenerationResult) -> ChatCompletionResponse:
        message = AssistantMessage(content=result.text)
        choice = ChatChoice(index=0, message=message, finish_reason=_finish_reason(result))
        return ChatCompletionResponse(id=request_id, created=created, model=body.model, choices=[choice],
                                      usage=_usage(result))  # fmt: skip

    return await _serve(
        request, state, prepared, gen, body,
        first=chunk(ChatDelta(role="assistant", content=""), None),
        delta=lambda text: chunk(ChatDelta(content=text), None),
        last=lambda result: chunk(ChatDelta(), _finish_reason(result)),
        usage=usage_chunk,
        final=final,
    )  # fmt: skip


async def _serve(
    request: web.Request,
    state: ServerState,
    prepared: Prepared,
    gen: Generation,
    body: CompletionRequest | ChatCompletionRequest,
    *,
    first: BaseModel | None,
    delta: Callable[[str], BaseModel],
    last: Callable[[GenerationResult], BaseModel],
    usage: Callable[[Usage], BaseModel],
    final: Callable[[GenerationResult], BaseModel],
) -> web.StreamResponse:
    """Answer with server-sent events or one JSON body, and record what was served."""
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        response, streamed = await _stream(
            request, gen, include_usage, headers=_headers(prepared),
            first=first, delta=delta, last=last, usage=usage,
        )  # fmt: skip
        if streamed is not None:
            record_served(state, prepared, streamed)
        return response
    result = await gen.result()
    _check_result(result)
    record_served(state, prepared, result)
    return web.json_response(json_body(final(result)), headers=_headers(prepared))


def _headers(prepared: Prepared) -> dict[str, str]:
    return served_headers(prepared.resolution, mesh_context_used=prepared.mesh_context_used)


def _prepare(
    state: ServerState,
    target: Target,
    prompt: str,
    body: CompletionRequest | ChatCompletionRequest,
    requested: int | None,
    prefix: str,
    mesh_context_used: bool,
    user_input: str,
    system_prompt: str | None,
) -> Prepared:
    service = state.ready_service()
    ids = service.encode(prompt)
    sampling = SamplingParams(
        temperature=body.temperature,
        top_p=body.top_p,
        max_new_tokens=service.max_new_tokens(len(ids), requested),
        stop=body.stop_sequences(),
        seed=body.seed,
        ignore_eos=body.ignore_eos,
    )
    request_id = new_request_id(prefix)
    request = GenerationRequest(ids, target.resolution.adapter, sampling, request_id=request_id)
    metadata = audit_metadata(requested, body.temperature, system_prompt)
    return Prepared(request_id, target.user_id, target.resolution, prompt, request, mesh_context_used,
                    user_input, metadata)  # fmt: skip


async def _stream(
    request: web.Request,
    gen: Generation,
    include_usage: bool,
    *,
    headers: dict[str, str],
    first: BaseModel | None,
    delta: Callable[[str], BaseModel],
    last: Callable[[GenerationResult], BaseModel],
    usage: Callable[[Usage], BaseModel],
) -> tuple[web.StreamResponse, GenerationResult | None]:
    """Send the generation as server-sent events; the result is None when the client left early.

    The response starts only once the first token exists, so a request that fails before that
    (busy slots, a rejected adapter) still gets a real HTTP status instead of an error event.
    """
    async with contextlib.aclosing(gen.tokens()) as tokens:
        pending = await anext(tokens, None)
        if pending is None:
            await gen.result()  # raises the engine's error, if any, while a status can still be sent
        response = await open_event_stream(request, headers)
        try:
            if first is not None:
                await send_event(response, first)
            sent: list[str] = []
            while pending is not None:
                if pending.text:
                    sent.append(pending.text)
                    await send_event(response, delta(pending.text))
                pending = await anext(tokens, None)
            try:
                result = await gen.result()
            except EngineError as exc:
                await send_error(response, from_engine_error(exc))
                await send_done(response)
                return response, None
            if result.failed:
                await send_error(response, ApiError(500, "generation failed", code="generation_failed"))
                await send_done(response)
                return response, result
            streamed = "".join(sent)
            if result.text.startswith(streamed) and len(result.text) > len(streamed):
                await send_event(response, delta(result.text[len(streamed) :]))
            await send_event(response, last(result))
            if include_usage:
                await send_event(response, usage(_usage(result)))
            await send_done(response)
            return response, result
        except ConnectionResetError:
            gen.handle.cancel()
            return response, None


_ERRORS = (403, 404, 429, 503)

ROUTES = [
    RouteDef(
        "GET",
        "/v1/models",
        list_models,
        "openai_models",
        Access.TENANT,
        "The base model and the adapters, each adapter with its parent",
        "openai",
        response_model=ModelList,
        errors=(503,),
    ),
    RouteDef(
        "POST",
        "/v1/completions",
        completions,
        "openai_completions",
        Access.TENANT,
        "Complete a prompt (sent to the model as given)",
        "openai",
        request_model=CompletionRequest,
        response_model=CompletionResponse,
        response_kind=ResponseKind.JSON_OR_SSE,
        stream_model=CompletionResponse,
        errors=_ERRORS,
    ),
    RouteDef(
        "POST",
        "/v1/chat/completions",
        chat_completions,
        "openai_chat_completions",
        Access.TENANT,
        "Answer a conversation (rendered with the model's chat template)",
        "openai",
        request_model=ChatCompletionRequest,
        response_model=ChatCompletionResponse,
        response_kind=ResponseKind.JSON_OR_SSE,
        stream_model=ChatCompletionChunk,
        errors=_ERRORS,
    ),
]
