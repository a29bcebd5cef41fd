"""Plain data types shared by the engine, the Python API and the HTTP layer (no torch here)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from saigon_runtime.adapters.types import AdapterRef
from saigon_runtime.errors import InvalidRequest

FinishReason = Literal["stop", "length", "cancelled", "error"]
# The default of every entry point (Python API, CLI, HTTP); 0 means greedy.
DEFAULT_TEMPERATURE = 0.7


def new_request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = 1.0
    max_new_tokens: int = 128
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # keep generating past the end-of-sequence token (benchmarks)

    def validate(self) -> None:
        if not 0.0 <= self.temperature <= 10.0:
            raise InvalidRequest("temperature must be between 0 and 10")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequest("top_p must be in (0, 1]")
        if self.max_new_tokens < 1:
            raise InvalidRequest("max_new_tokens must be at least 1")


@dataclass
class TokenEvent:
    """One step of streamed output for one request."""

    text: str  # text delta since the previous event (may be empty while a char is incomplete)
    token_id: int
    index: int  # 0-based index of the generated token


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    adapter: AdapterRef | None
    time_to_first_token_s: float | None
    latency_s: float
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.finish_reason == "error" or self.error is not None


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    adapter: AdapterRef | None = None  # None serves the base model
    sampling: SamplingParams = field(default_factory=SamplingParams)
    on_token: Callable[[TokenEvent], None] | None = None  # called from the engine thread
    request_id: str = ""


class RequestHandle:
    """What `Engine.submit` returns: wait for the result (sync or async) or cancel."""

    def __init__(self, request: GenerationRequest) -> None:
        self.request = request
        self.submitted_at = time.perf_counter()
        self._done = threading.Event()
        self._result: GenerationResult | None = None
        self._error: BaseException | None = None
        self._cancelled = threading.Event()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._lock = threading.Lock()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> GenerationResult:
        if not self._done.wait(timeout):
            raise TimeoutError("generation did not finish in time")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    async def wait(self) -> GenerationResult:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if not self._done.is_set():
                self._waiters.append((loop, fut))
            else:
                fut.set_result(None)
        await fut
        return self.result(0)

    # Called by the engine thread.
    def _finish(self, result: GenerationResult | None, error: BaseException | None = None) -> None:
        with self._lock:
            self._result, self._error = result, error
            self._done.set()
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_set_done, fut)


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
