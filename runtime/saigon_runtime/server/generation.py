"""Running one generation from the event loop: submit to the engine, stream its tokens across
the thread boundary, record metrics, cancel when the client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from saigon_runtime.adapters.types import AdapterRef
from saigon_runtime.engine.types import GenerationRequest, GenerationResult, RequestHandle, TokenEvent
from saigon_runtime.errors import EngineBusy, EngineError, EngineStopped
from saigon_runtime.server.state import ServerState
from saigon_runtime.service import Prepared

# Below this, dividing logits by the temperature overflows to inf and sampling breaks; such
# temperatures mean "as good as greedy" anyway (vLLM uses the same cut-off).
MIN_SAMPLING_TEMPERATURE = 1e-5
# Refusals that say nothing about an adapter version's health (load, shutdown).
_NOT_THE_VERSION = (EngineBusy, EngineStopped)


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
        except BaseException as exc:
            self.handle.cancel()
            if self.adapter is not None and isinstance(exc, EngineError) and not isinstance(exc, _NOT_THE_VERSION):
                self.state.versions.record(self.adapter.name, self.adapter.version, ok=False)
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
        if self.adapter is not None and result.finish_reason != "cancelled":
            self.state.versions.record(
                self.adapter.name, self.adapter.version, ok=not result.failed, latency_s=result.latency_s
            )
        self.state.metrics.observe_generation(
            self.scope,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            latency_s=result.latency_s,
            ttft_s=result.time_to_first_token_s,
            finish_reason=result.finish_reason,
        )


def submit(state: ServerState, request: GenerationRequest, *, stream: bool = False) -> Generation:
    """Hand one request to the engine (raises EngineBusy -> 429, InvalidRequest -> 400)."""
    engine = state.ready_engine()
    request.sampling.validate()
    if 0.0 < request.sampling.temperature < MIN_SAMPLING_TEMPERATURE:
        request.sampling = dataclasses.replace(request.sampling, temperature=0.0)
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
    return Generation(state, handle, request.adapter, events)


def record_served(state: ServerState, prepared: Prepared, result: GenerationResult) -> dict[str, object]:
    """After a request finishes: remember it for /api/saigon/status, write the audit record and
    return the original API's answer (InferenceService.report: one format for every caller)."""
    state.current_user = prepared.user_id
    adapter = prepared.resolution.adapter
    state.current_adapter = adapter.name if adapter is not None else None
    # Not ready_service(): a request that started before draining still gets reported.
    assert state.service is not None
    return state.service.report(prepared, result)
