"""The OpenAI-compatible API: /v1/models, /v1/completions and /v1/chat/completions, with
server-sent-event streaming and `usage`. `model` names an adapter, the base model or a user
(`user_<id>`: that user's cascade); the user is resolved by server.identity, the mesh context is
opt-in (server.mesh_context); the official `openai` client works unchanged against these routes.

A request becomes one engine row per choice: `n` choices for each prompt (completions accept
a string, a list of strings, a list of token ids or a list of such lists), choice index
`prompt_index * n + i`. Every accepted parameter reaches the engine; the few OpenAI
parameters this server does not implement are refused with a 400 naming them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from saigon_runtime.adapters.manager import Resolution
from saigon_runtime.engine.grammar import GrammarSpec, json_object_spec
from saigon_runtime.engine.types import (
    GenerationRequest,
    GenerationResult,
    SamplingDefaults,
    SamplingParams,
    TokenEvent,
    TokenLogprob,
    new_request_id,
)
from saigon_runtime.errors import EngineError
from saigon_runtime.mesh.prompt import build_chat_prompt
from saigon_runtime.server.cascade import Target, resolve_target, served_headers
from saigon_runtime.server.errors import ApiError, from_engine_error
from saigon_runtime.server.generation import Generation, record_served, submit
from saigon_runtime.server.identity import caller_user, openai_user
from saigon_runtime.server.logprobs import TokenNames, chat_logprobs, completion_logprobs
from saigon_runtime.server.mesh_context import FIELD as MESH_FIELD
from saigon_runtime.server.mesh_context import context_for, mesh_wanted, with_context
from saigon_runtime.server.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    FinishReason,
    ResponseFormatJsonObject,
    ResponseFormatJsonSchema,
    Usage,
    json_body,
)
from saigon_runtime.server.routes_models import ROUTES as MODEL_ROUTES
from saigon_runtime.server.routing import Access, ResponseKind, RouteDef, parse_body
from saigon_runtime.server.sse import open_event_stream, send_done, send_error, send_event
from saigon_runtime.server.state import ServerState, state_of
from saigon_runtime.service import Prepared, audit_metadata


def _finish_reason(result: GenerationResult) -> FinishReason:
    return "length" if result.finish_reason == "length" else "stop"


def _bad(param: str, message: str) -> ApiError:
    # A rule across fields or against the model (best_of vs n, token ids vs the vocabulary) that
    # the schema cannot state.
    return ApiError(400, message, param=param, code="unsupported_value")


# ---------------------------------------------------------------- one request, several rows


@dataclass
class Choice:
    index: int
    prompt_index: int
    prepared: Prepared
    gen: Generation | None = None


@dataclass
class Plan:
    """What a completions or chat request turns into: its rows and how to answer with them."""

    body: CompletionRequest | ChatCompletionRequest
    resolution: Resolution
    choices: list[Choice]
    prompt_tokens: int
    request_id: str
    mesh_context_used: bool
    created: int = field(default_factory=lambda: int(time.time()))

    def headers(self) -> dict[str, str]:
        return served_headers(self.resolution, mesh_context_used=self.mesh_context_used)

    def usage(self, results: list[GenerationResult]) -> Usage:
        completion = sum(r.completion_tokens for r in results)
        return Usage(
            prompt_tokens=self.prompt_tokens, completion_tokens=completion, total_tokens=self.prompt_tokens + completion
        )


def _json_constrained(body: CompletionRequest | ChatCompletionRequest) -> bool:
    """A JSON response_format: its grammar ends the row when the value is complete."""
    return body.response_format is not None and body.response_format.type != "text"


def _check_common(body: CompletionRequest | ChatCompletionRequest) -> None:
    if body.min_tokens and _json_constrained(body):
        # The grammar ends a row when its value is complete; holding off the end would fight it.
        raise _bad("min_tokens", "min_tokens cannot be combined with a JSON response_format")
    if body.stream_options is not None and not body.stream:
        raise _bad("stream_options", "stream_options is only allowed with stream: true")


def _sampling(
    body: CompletionRequest | ChatCompletionRequest,
    defaults: SamplingDefaults,
    max_new_tokens: int,
    logprobs: int | None,
) -> SamplingParams:
    """The request's sampling; what it leaves out comes from the model's generation_config, else
    OpenAI's defaults."""
    bias: list[tuple[int, float]] = []
    for token, value in (body.logit_bias or {}).items():
        if not token.isascii() or not token.isdigit():
            raise _bad("logit_bias", f"logit_bias keys are token ids; {token[:12]!r} is not")
        bias.append((int(token), float(value)))
    return SamplingParams(
        temperature=_first(body.temperature, defaults.temperature, 1.0),
        top_p=_first(body.top_p, defaults.top_p, 1.0),
        max_new_tokens=max_new_tokens,
        min_new_tokens=_min_new_tokens(body, defaults, max_new_tokens),
        stop=body.stop_sequences(),
        seed=body.seed,
        ignore_eos=body.ignore_eos,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        repetition_penalty=_first(body.repetition_penalty, defaults.repetition_penalty, 1.0),
        logit_bias=tuple(bias),
        logprobs=logprobs,
    )


def _min_new_tokens(body: CompletionRequest | ChatCompletionRequest, defaults: SamplingDefaults, cap: int) -> int:
    """The request's min_tokens, else the model's min_new_tokens within the answer's length (never
    under a JSON response_format, whose grammar ends the row)."""
    if "min_tokens" in body.model_fields_set or defaults.min_new_tokens is None:
        return body.min_tokens
    if _json_constrained(body):
        return 0
    return min(defaults.min_new_tokens, cap)


def _first(*values: float | None) -> float:
    return next(v for v in values if v is not None)


def _grammar_spec(body: CompletionRequest | ChatCompletionRequest) -> GrammarSpec | None:
    fmt = body.response_format
    if isinstance(fmt, ResponseFormatJsonObject):
        return json_object_spec()
    if isinstance(fmt, ResponseFormatJsonSchema):
        return GrammarSpec(json.dumps(fmt.json_schema.schema_ or {}))
    return None


async def _target(request: web.Request, body: CompletionRequest | ChatCompletionRequest) -> Target:
    return await resolve_target(request, body.model, caller_user(request, openai_user(body.user)))


@dataclass(frozen=True)
class PromptRow:
    """One prompt as the model sees it (context included) and what the user wrote, for the audit log."""

    text: str
    ids: list[int]
    user_input: str


async def _plan(
    request: web.Request,
    body: CompletionRequest | ChatCompletionRequest,
    target: Target,
    prompts: list[PromptRow],
    requested: int | None,
    logprobs: int | None,
    prefix: str,
    *,
    mesh_context_used: bool,
    system_prompt: str | None = None,
) -> Plan:
    """Validate everything before any row starts: a bad request costs the engine nothing."""
    state = state_of(request)
    service = state.ready_service()
    engine = state.ready_engine()
    resolution = target.resolution
    total = len(prompts) * body.n
    if total > state.config.max_queue:
        raise _bad("n", f"prompts x n = {total} choices; this server queues at most {state.config.max_queue}")
    spec = _grammar_spec(body)
    if spec is not None:
        await asyncio.to_thread(engine.grammars.validate, spec)
    request_id = new_request_id(prefix)
    choices: list[Choice] = []
    for p_index, prompt in enumerate(prompts):
        text, ids = prompt.text, prompt.ids
        base = _sampling(body, engine.sampling_defaults, service.max_new_tokens(len(ids), requested), logprobs)
        base.validate()
        metadata = audit_metadata(requested, base.temperature, system_prompt)
        for i in range(body.n):
            seed = None if body.seed is None else body.seed + i  # each choice its own, reproducible
            sampling = dataclasses.replace(base, seed=seed)
            grammar = await asyncio.to_thread(engine.grammars.matcher, spec) if spec is not None else None
            row = GenerationRequest(list(ids), resolution.adapter, sampling, request_id=request_id, grammar=grammar)
            prepared = Prepared(request_id, target.user_id, resolution, text, row, mesh_context_used,
                                prompt.user_input, metadata)  # fmt: skip
            choices.append(Choice(p_index * body.n + i, p_index, prepared))
    prompt_tokens = sum(len(p.ids) for p in prompts)
    return Plan(body, resolution, choices, prompt_tokens, request_id, mesh_context_used)


def _submit_all(state: ServerState, plan: Plan) -> None:
    """All rows at once (the engine prefills them together), or none."""
    try:
        for choice in plan.choices:
            choice.gen = submit(state, choice.prepared.request, stream=plan.body.stream)
    except BaseException:
        for choice in plan.choices:
            if choice.gen is not None:
                choice.gen.handle.cancel()
        raise


async def _results(plan: Plan) -> list[GenerationResult]:
    """Await every row; a cancelled handler (the client went away) cancels them all."""
    gens = [c.gen for c in plan.choices if c.gen is not None]
    results = list(await asyncio.gather(*(g.result() for g in gens)))
    if any(r.failed for r in results):
        raise ApiError(500, "generation failed", code="generation_failed")
    return results


def _record(state: ServerState, plan: Plan, results: list[GenerationResult]) -> None:
    for choice, result in zip(plan.choices, results, strict=True):
        record_served(state, choice.prepared, result)


# ---------------------------------------------------------------- completions


async def completions(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, CompletionRequest)
    _check_common(body)
    if body.best_of is not None and body.best_of != body.n:
        raise _bad("best_of", "best_of is only supported equal to n")
    state = state_of(request)
    service = state.ready_service()
    engine = state.ready_engine()
    tokenizer = engine.tokenizer
    vocab = engine.vocab_size
    if any(not isinstance(item, str) and max(item) >= vocab for item in body.prompts()):
        raise _bad("prompt", f"prompt token ids must be in [0, {vocab})")
    target = await _target(request, body)
    wanted = mesh_wanted(state, body.mesh_context, target.user_id)
    if wanted and any(not isinstance(item, str) for item in body.prompts()):
        if body.mesh_context:
            raise _bad(MESH_FIELD, "mesh context goes with text prompts, not token ids")
        wanted = False  # the model's default applies to text prompts only
    prompts: list[PromptRow] = []
    for item in body.prompts():
        if isinstance(item, str):
            text = with_context(state, item, await context_for(state, target.user_id, item, wanted))
            prompts.append(PromptRow(text, await state.tokenizing(service.encode, text), item))
        else:
            decoded = str(tokenizer.decode(item))
            prompts.append(PromptRow(decoded, list(item), decoded))
    plan = await _plan(request, body, target, prompts, body.max_tokens, body.logprobs, "cmpl",
                       mesh_context_used=wanted)  # fmt: skip
    names = TokenNames(tokenizer, body.return_tokens_as_token_ids)
    echoed = await _echo_logprobs(state, plan) if body.echo and body.logprobs is not None else {}
    _submit_all(state, plan)

    def response(choices: list[CompletionChoice], usage: Usage | None = None) -> CompletionResponse:
        return CompletionResponse(id=plan.request_id, created=plan.created, model=body.model, choices=choices,
                                  usage=usage)  # fmt: skip

    def prefix(choice: Choice) -> str:
        return choice.prepared.user_input if body.echo else ""

    def logprobs_of(
        choice: Choice, tokens: list[TokenLogprob], offset: int, with_prompt: bool
    ) -> CompletionLogprobs | None:
        if body.logprobs is None:
            return None
        entries: list[tuple[int, TokenLogprob | None]] = []
        if with_prompt and body.echo:
            ids = choice.prepared.request.prompt_ids
            entries.extend(zip(ids, echoed.get(choice.prompt_index, [None] * len(ids)), strict=True))
        entries.extend((t.token_id, t) for t in tokens)
        return completion_logprobs(entries, names, offset)

    if body.stream:

        def opening(choice: Choice) -> BaseModel | None:
            if not body.echo:
                return None
            lp = logprobs_of(choice, [], 0, with_prompt=True)
            return response([CompletionChoice(index=choice.index, text=prefix(choice), finish_reason=None,
                                              logprobs=lp)])  # fmt: skip

        def delta(choice: Choice, text: str, tokens: list[TokenLogprob], offset: int) -> BaseModel:
            lp = logprobs_of(choice, tokens, offset + len(prefix(choice)), with_prompt=False)
            return response([CompletionChoice(index=choice.index, text=text, finish_reason=None,
                                              logprobs=lp)])  # fmt: skip

        def last(choice: Choice, result: GenerationResult) -> BaseModel:
            return response([CompletionChoice(index=choice.index, text="", finish_reason=_finish_reason(result))])

        return await _stream(request, state, plan, opening=opening, delta=delta, last=last,
                             usage=lambda u: response([], u))  # fmt: skip

    results = await _results(plan)
    _record(state, plan, results)
    choices = [
        CompletionChoice(
            index=c.index,
            text=prefix(c) + r.text,
            finish_reason=_finish_reason(r),
            logprobs=logprobs_of(c, r.logprobs or [], 0, with_prompt=True),
        )
        for c, r in zip(plan.choices, results, strict=True)
    ]
    return web.json_response(json_body(response(choices, plan.usage(results))), headers=plan.headers())


async def _echo_logprobs(state: ServerState, plan: Plan) -> dict[int, list[TokenLogprob | None]]:
    """Per prompt: its tokens' log-probabilities, scored once between two engine steps."""
    engine = state.ready_engine()
    top = plan.body.logprobs if isinstance(plan.body, CompletionRequest) else None
    out: dict[int, list[TokenLogprob | None]] = {}
    for choice in plan.choices:
        if choice.prompt_index not in out:
            ids = choice.prepared.request.prompt_ids
            out[choice.prompt_index] = await asyncio.to_thread(
                engine.prompt_logprobs, ids, plan.resolution.adapter, top or 0
            )
    return out


# ---------------------------------------------------------------- chat


def _chat_prompt(tokenizer: Any, messages: list[dict[str, str]], context: str | None) -> str:
    """The conversation through the model's chat template (in a worker thread: it is CPU work)."""
    try:
        return build_chat_prompt(tokenizer, messages, context=context)
    except Exception as exc:  # a template that refuses this conversation (e.g. role order)
        raise ApiError(
            400,
            f"the conversation does not fit the model's chat template ({type(exc).__name__})",
            param="messages",
            code="bad_messages",
        ) from None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, ChatCompletionRequest)
    _check_common(body)
    if body.top_logprobs is not None and not body.logprobs:
        raise _bad("top_logprobs", "top_logprobs needs logprobs: true")
    state = state_of(request)
    engine = state.ready_engine()
    target = await _target(request, body)
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    users_turns = [m["content"] for m in messages if m["role"] == "user"]
    query = users_turns[-1] if users_turns else ""
    wanted = mesh_wanted(state, body.mesh_context, target.user_id)
    context = await context_for(state, target.user_id, query, wanted)
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    prompt = await state.tokenizing(_chat_prompt, engine.tokenizer, messages, context)
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    service = state.ready_service()
    rows = [PromptRow(prompt, await state.tokenizing(service.encode, prompt), query)]
    plan = await _plan(request, body, target, rows, requested, logprobs, "chatcmpl",
                       mesh_context_used=context is not None, system_prompt=system)  # fmt: skip
    names = TokenNames(engine.tokenizer, body.return_tokens_as_token_ids)
    _submit_all(state, plan)

    def chunk(choice: ChatChunkChoice) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=plan.request_id, created=plan.created, model=body.model, choices=[choice])

    def logprobs_of(tokens: list[TokenLogprob]) -> ChatLogprobs | None:
        return chat_logprobs(tokens, names) if body.logprobs else None

    if body.stream:

        def opening(choice: Choice) -> BaseModel:
            return chunk(ChatChunkChoice(index=choice.index, delta=ChatDelta(role="assistant", content="")))

        def delta(choice: Choice, text: str, tokens: list[TokenLogprob], offset: int) -> BaseModel:
            return chunk(ChatChunkChoice(index=choice.index, delta=ChatDelta(content=text),
                                         logprobs=logprobs_of(tokens)))  # fmt: skip

        def last(choice: Choice, result: GenerationResult) -> BaseModel:
            return chunk(ChatChunkChoice(index=choice.index, delta=ChatDelta(), finish_reason=_finish_reason(result)))

        def usage(u: Usage) -> BaseModel:
            return ChatCompletionChunk(id=plan.request_id, created=plan.created, model=body.model, choices=[], usage=u)

        return await _stream(request, state, plan, opening=opening, delta=delta, last=last, usage=usage)

    results = await _results(plan)
    _record(state, plan, results)
    choices = [
        ChatChoice(
            index=c.index,
            message=AssistantMessage(content=r.text),
            finish_reason=_finish_reason(r),
            logprobs=logprobs_of(r.logprobs or []),
        )
        for c, r in zip(plan.choices, results, strict=True)
    ]
    answer = ChatCompletionResponse(id=plan.request_id, created=plan.created, model=body.model, choices=choices,
                                    usage=plan.usage(results))  # fmt: skip
    return web.json_response(json_body(answer), headers=plan.headers())


# ---------------------------------------------------------------- streaming


@dataclass
class _ChoiceStream:
    """What one choice has sent so far; log-probabilities wait for the text they belong to."""

    sent: list[str] = field(default_factory=list)
    pending: list[TokenLogprob] = field(default_factory=list)

    @property
    def offset(self) -> int:
        return sum(len(t) for t in self.sent)


async def _events(plan: Plan) -> AsyncGenerator[tuple[Choice, TokenEvent | None], None]:
    """Every choice's token events, interleaved as they come; (choice, None) when a choice ends."""
    queue: asyncio.Queue[tuple[Choice, TokenEvent | None]] = asyncio.Queue()

    async def pump(choice: Choice) -> None:
        assert choice.gen is not None
        try:
            async with contextlib.aclosing(choice.gen.tokens()) as tokens:
                async for event in tokens:
                    queue.put_nowait((choice, event))
        finally:
            queue.put_nowait((choice, None))

    pumps = [asyncio.create_task(pump(c)) for c in plan.choices]
    try:
        remaining = len(pumps)
        while remaining:
            item = await queue.get()
            remaining -= item[1] is None
            yield item
    finally:
        for task in pumps:
            task.cancel()
        for choice in plan.choices:
            if choice.gen is not None and not choice.gen.handle.done():
                choice.gen.handle.cancel()


async def _stream(
    request: web.Request,
    state: ServerState,
    plan: Plan,
    *,
    opening: Callable[[Choice], BaseModel | None],
    delta: Callable[[Choice, str, list[TokenLogprob], int], BaseModel],
    last: Callable[[Choice, GenerationResult], BaseModel],
    usage: Callable[[Usage], BaseModel],
) -> web.StreamResponse:
    """Send every choice as server-sent events, then [DONE].

    The response starts only once a first event exists, so a request that fails before that
    (busy slots, a rejected adapter) still gets a real HTTP status instead of an error event.
    """
    body = plan.body
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    streams = {c.index: _ChoiceStream() for c in plan.choices}
    async with contextlib.aclosing(_events(plan)) as events:
        first = await anext(events, None)
        if first is not None and first[1] is None:
            assert first[0].gen is not None
            await first[0].gen.result()  # raises the engine's error, if any, while a status can still be sent
        response = await open_event_stream(request, plan.headers())
        try:
            for choice in plan.choices:
                if (event := opening(choice)) is not None:
                    await send_event(response, event)
            results: dict[int, GenerationResult] = {}
            item = first
            while item is not None:
                choice, token = item
                stream = streams[choice.index]
                if token is None:
                    result = await _finished(choice)
                    if result.failed:
                        await send_error(response, ApiError(500, "generation failed", code="generation_failed"))
                        await send_done(response)
                        return response
                    streamed = "".join(stream.sent)
                    tail = result.text[len(streamed) :] if result.text.startswith(streamed) else ""
                    if tail or stream.pending:
                        await send_event(response, delta(choice, tail, stream.pending, stream.offset))
                    await send_event(response, last(choice, result))
                    results[choice.index] = result
                else:
                    if token.logprob is not None:
                        stream.pending.append(token.logprob)
                    if token.text:
                        await send_event(response, delta(choice, token.text, stream.pending, stream.offset))
                        stream.sent.append(token.text)
                        stream.pending = []
                item = await anext(events, None)
        except EngineError as exc:
            await send_error(response, from_engine_error(exc))
            await send_done(response)
            return response
        except ConnectionResetError:
            return response
    ordered = [results[c.index] for c in plan.choices]
    if include_usage:
        await send_event(response, usage(plan.usage(ordered)))
    await send_done(response)
    _record(state, plan, ordered)
    return response


async def _finished(choice: Choice) -> GenerationResult:
    assert choice.gen is not None
    return await choice.gen.result()


_ERRORS = (403, 404, 429, 503)

ROUTES = [
    *MODEL_ROUTES,
    RouteDef(
        "POST",
        "/v1/completions",
        completions,
        "openai_completions",
        Access.TENANT,
        "Complete one or several prompts (each sent to the model as given), n choices each",
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
        "Answer a conversation (rendered with the model's chat template), n choices",
        "openai",
        request_model=ChatCompletionRequest,
        response_model=ChatCompletionResponse,
        response_kind=ResponseKind.JSON_OR_SSE,
        stream_model=ChatCompletionChunk,
        errors=_ERRORS,
    ),
]
