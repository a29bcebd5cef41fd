"""Running one generation from the event loop: submit to the engine, stream its tokens across
the thread boundary, record metrics, cancel when the client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from saigon_runtime.audit import AuditRecord
from saigon_runtime.engine.types import (
    AdapterRef,
    GenerationRequest,
    GenerationResult,
    RequestHandle,
    SamplingParams,
    TokenEvent,
)
from saigon_runtime.server.errors import ApiError
from saigon_runtime.server.state import ServerState


def new_request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def encode(state: ServerState, text: str) -> list[int]:
    """Token ids for a prompt string, exactly as the model will see it."""
    engine = state.ready_engine()
    try:
        ids = engine.tokenizer.encode(text)
    except Exception as exc:  # a tokenizer choking on odd input is a bad request, not a 500
        raise ApiError(400, f"the prompt cannot be tokenized ({type(exc).__name__})", code="bad_prompt") from None
    if not ids:
        raise ApiError(400, "the prompt is empty once tokenized", param="prompt", code="empty_prompt")
    return list(ids)


def bounded_max_tokens(state: ServerState, prompt_tokens: int, requested: int | None) -> int:
    """Requested new tokens, capped by the server limit and by what the context has left."""
    engine = state.ready_engine()
    context = int(engine.max_positions)
    room = context - prompt_tokens
    if room < 1:
        raise ApiError(
            400,
            f"the prompt is {prompt_tokens} tokens; this model's context is {context}",
            param="prompt",
            code="context_length_exceeded",
        )
    limit = min(room, state.config.max_new_tokens)
    return limit if requested is None else min(requested, limit)


@dataclass
class Generation:
    """One submitted request, awaited (or streamed) from the event loop."""

    state: ServerState
    handle: RequestHandle
    adapter: AdapterRef | None
    events: asyncio.Queue[TokenEvent | None] | None
    started: float = field(default_factory=time.perf_counter)
    _recorded: bool = False

    @property
    def scope(self) -> str:
        return self.adapter.scope if self.adapter is not None else "base"

    async def result(self) -> GenerationResult:
        try:
            result = await self.handle.wait()
        except BaseException:
            self.handle.cancel()
            raise
        self._record(result)
        return result

    async def tokens(self) -> AsyncGenerator[TokenEvent, None]:
        """Token events as the engine produces them; ends when the request finishes."""
        assert self.events is not None, "submit(stream=True) to iterate tokens"
        events = self.events

        async def close_when_done() -> None:
            # handle.wait() resolves through call_soon_threadsafe after every token event the
            # engine queued before finishing, so the sentinel lands after the last token.
            with contextlib.suppress(Exception):
                await self.handle.wait()
            events.put_nowait(None)

        closer = asyncio.create_task(close_when_done())
        try:
            while (event := await events.get()) is not None:
                yield event
        finally:
            if not self.handle.done():
                self.handle.cancel()
            closer.cancel()

    def _record(self, result: GenerationResult) -> None:
        if self._recorded:
            return
        self._recorded = True
        self.state.metrics.observe_generation(
            self.scope,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            latency_s=result.latency_s,
            ttft_s=result.time_to_first_token_s,
            finish_reason=result.finish_reason,
        )


def submit(
    state: ServerState,
    prompt_ids: list[int],
    adapter: AdapterRef | None,
    sampling: SamplingParams,
    *,
    stream: bool = False,
    request_id: str = "",
) -> Generation:
    """Hand one request to the engine (raises EngineBusy -> 429, InvalidRequest -> 400)."""
    engine = state.ready_engine()
    sampling.validate()
    request = GenerationRequest(prompt_ids=prompt_ids, adapter=adapter, sampling=sampling, request_id=request_id)
    events: asyncio.Queue[TokenEvent | None] | None = None
    if stream:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[TokenEvent | None] = asyncio.Queue()
        events = queue

        def on_token(event: TokenEvent) -> None:  # engine thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, event)

        request.on_token = on_token
    try:
        handle = engine.submit(request)
    except Exception as exc:
        state.metrics.rejections.labels(getattr(exc, "kind", "error")).inc()
        raise
    return Generation(state, handle, adapter, events)


def record_served(
    state: ServerState,
    *,
    request_id: str,
    user_id: str | None,
    adapter: AdapterRef | None,
    result: GenerationResult,
    prompt: str,
    mesh_context_used: bool = False,
) -> None:
    """After a request finishes: remember it for /api/saigon/status and append the audit line."""
    state.current_user = user_id
    state.current_adapter = adapter.name if adapter is not None else None
    if state.audit is None:
        return
    engine = state.engine
    state.audit.submit(
        AuditRecord(
            request_id=request_id,
            user_id=user_id,
            adapter_used=adapter.name if adapter is not None else None,
            adapter_active=adapter.version if adapter is not None else None,
            mesh_context_used=mesh_context_used,
            device=str(engine.device) if engine is not None else "",
            latency_ms=result.latency_s * 1000.0,
            tokens_in=result.prompt_tokens,
            tokens_out=result.completion_tokens,
            status="ok" if result.error is None else "error",
            prompt=prompt,
            output=result.text,
        )
    )
