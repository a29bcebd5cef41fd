"""Plain data types shared by the engine, the Python API and the HTTP layer (no torch here)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from saigon_runtime.adapters.types import AdapterRef
from saigon_runtime.errors import InvalidRequest

if TYPE_CHECKING:
    from saigon_runtime.engine.grammar import RowGrammar

FinishReason = Literal["stop", "length", "cancelled", "error"]
# The default of every entry point (Python API, CLI, HTTP); 0 means greedy.
DEFAULT_TEMPERATURE = 0.7


def new_request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


# Documented limits of the sampling extras (OpenAI's ranges where it defines one).
MAX_LOGPROBS = 20
PENALTY_RANGE = (-2.0, 2.0)  # presence and frequency
REPETITION_PENALTY_MAX = 10.0
# A model's own min_new_tokens default above this is ignored (a misconfiguration, not a floor).
MIN_NEW_TOKENS_DEFAULT_MAX = 64
LOGIT_BIAS_RANGE = (-100.0, 100.0)
MAX_LOGIT_BIAS_ENTRIES = 1024
SEED_RANGE = (-(2**63), 2**64 - 1)


@dataclass(frozen=True)
class SamplingDefaults:
    """The sampling settings a model ships in its generation_config.json; the OpenAI routes apply
    them (as vLLM does) to requests that leave them out. None: the API's own default."""

    temperature: float | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    # Hugging Face's min_new_tokens; a request's min_tokens overrides it, and it never exceeds the
    # request's maximum length or applies under a JSON response_format.
    min_new_tokens: int | None = None


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = 1.0
    max_new_tokens: int = 128
    min_new_tokens: int = 0  # end-of-sequence and stop strings take effect only after this many tokens
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # keep generating past the end-of-sequence token (benchmarks)
    presence_penalty: float = 0.0  # subtracted once from the logit of every token already generated
    frequency_penalty: float = 0.0  # subtracted per occurrence in the generated tokens
    repetition_penalty: float = 1.0  # divides positive (multiplies negative) logits of prompt and output tokens
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit)
    logprobs: int | None = None  # None: none; k: the chosen token's log-probability and the k most likely

    def validate(self) -> None:
        if not 0.0 <= self.temperature <= 10.0:
            raise InvalidRequest("temperature must be between 0 and 10")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequest("top_p must be in (0, 1]")
        if self.max_new_tokens < 1:
            raise InvalidRequest("max_new_tokens must be at least 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise InvalidRequest(
                f"min_tokens must be between 0 and the maximum number of new tokens ({self.max_new_tokens})",
                param="min_tokens",
            )
        low, high = PENALTY_RANGE
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not low <= value <= high:
                raise InvalidRequest(f"{name} must be between {low} and {high}", param=name)
        if not 0.0 < self.repetition_penalty <= REPETITION_PENALTY_MAX:
            raise InvalidRequest(
                f"repetition_penalty must be in (0, {REPETITION_PENALTY_MAX}]", param="repetition_penalty"
            )
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise InvalidRequest(f"logprobs must be between 0 and {MAX_LOGPROBS}", param="logprobs")
        if len(self.logit_bias) > MAX_LOGIT_BIAS_ENTRIES:
            raise InvalidRequest(f"logit_bias holds at most {MAX_LOGIT_BIAS_ENTRIES} entries", param="logit_bias")
        low, high = LOGIT_BIAS_RANGE
        if any(not low <= bias <= high for _, bias in self.logit_bias):
            raise InvalidRequest(f"logit_bias values must be between {low} and {high}", param="logit_bias")
        if self.seed is not None and not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise InvalidRequest("seed must fit in 64 bits", param="seed")

    @property
    def penalized(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0 or self.repetition_penalty != 1.0


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability under the model and the `top` most likely alternatives."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass
class TokenEvent:
    """One step of streamed output for one request."""

    text: str  # text delta since the previous event (may be empty while a char is incomplete)
    token_id: int
    index: int  # 0-based index of the generated token
    logprob: TokenLogprob | None = None  # when the request asked for log-probabilities


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
    logprobs: list[TokenLogprob] | None = None  # one per generated token, when asked

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
    grammar: RowGrammar | None = None  # constrained decoding state, compiled before submitting


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
