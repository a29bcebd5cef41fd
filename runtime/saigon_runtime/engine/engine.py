"""The engine thread: continuous batching over one base model with per-row adapters.

Requests queue up; at every step boundary the engine admits what fits (a device slot for
the request's adapter and room in the batch), prefills the newcomers together, merges
them into the running batch, and runs one decode step for every running row in a single
forward pass. Finished, stopped or cancelled rows leave at once. A row keeps the adapter
slot it started with until it finishes, so a hot-swap never changes a running answer.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from saigon_runtime.adapters.manager import AdapterManager, CacheStats
from saigon_runtime.adapters.types import AdapterRef, DeviceAdapter
from saigon_runtime.config import RuntimeConfig
from saigon_runtime.engine import kv as kvops
from saigon_runtime.engine import threads
from saigon_runtime.engine.detokenize import IncrementalText
from saigon_runtime.engine.grammar import GrammarCompiler
from saigon_runtime.engine.lora import wrap_model
from saigon_runtime.engine.memory import composition_cache_bytes
from saigon_runtime.engine.model_loader import LoadedModel
from saigon_runtime.engine.sampling import RowSampling, sample_next, seeded_generator, token_logprob
from saigon_runtime.engine.types import (
    MIN_NEW_TOKENS_DEFAULT_MAX,
    REPETITION_PENALTY_MAX,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    RequestHandle,
    SamplingDefaults,
    TokenEvent,
    TokenLogprob,
)
from saigon_runtime.errors import (
    AdapterNotFound,
    AdapterRejected,
    EngineBusy,
    EngineError,
    EngineStopped,
    InvalidRequest,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
_OOM = torch.cuda.OutOfMemoryError


@dataclass
class EngineStats:
    queue_depth: int
    running: int
    steps: int
    tokens_in_total: int
    tokens_out_total: int
    requests_total: dict[str, int]
    oom_events: int
    last_batch_size: int
    max_batch_size: int
    device: str
    device_memory_bytes: int
    cache: CacheStats


@dataclass(eq=False)
class _Seq:
    handle: RequestHandle
    dev: DeviceAdapter | None
    text: IncrementalText
    generator: torch.Generator | None
    generated: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    first_token_at: float | None = None
    cache_len: int = 0  # real tokens in the KV cache for this row

    @property
    def request(self) -> GenerationRequest:
        return self.handle.request


class Engine:
    def __init__(self, loaded: LoadedModel, config: RuntimeConfig, adapters: AdapterManager) -> None:
        """`adapters` serves `loaded.model`'s LoRA targets (saigon_runtime.assembly builds both)."""
        self.config = config
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.model_id = loaded.model_id
        self.torch_device = loaded.device
        self.device = str(loaded.device)
        self.dtype = loaded.dtype
        self.fallback_reason = loaded.fallback_reason
        cache_bytes = composition_cache_bytes(
            adapters.shapes, loaded.dtype, max_batch_size=config.max_batch_size, max_rank=config.max_rank
        )
        self.lora = wrap_model(self.model, loaded.device, loaded.dtype, cache_bytes)
        if adapters.shapes != self.lora.shapes:
            raise EngineError("the adapter manager was built for another model's LoRA targets")
        self.adapters = adapters
        self.vocab_size = int(self.model.get_input_embeddings().weight.shape[0])  # type: ignore[index]
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 1 << 30) or 1 << 30)
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self._eos_banned = tuple(sorted(i for i in self.eos_ids if 0 <= i < self.vocab_size))
        self.sampling_defaults = _sampling_defaults(self.model)
        self.grammars = GrammarCompiler(self.tokenizer, self.vocab_size, self.eos_ids)
        self.max_prefill_tokens = 8192
        self.starvation_s = min(1.0, config.slot_wait_timeout_s / 4)
        self._waiting: deque[RequestHandle] = deque()
        self._running: list[_Seq] = []
        self._kv: kvops.BatchKV | None = None
        self._cond = threading.Condition()
        self._accepting = True
        self._stop = False
        self._thread: threading.Thread | None = None
        self._threads_taken = threading.Event()
        self._observers: list[Callable[[int, int], None]] = []
        self._steps = 0
        self._tokens_in = 0
        self._tokens_out = 0
        self._finished: dict[str, int] = {}
        self._oom_events = 0
        self._last_batch = 0
        self._admit_limit = config.max_batch_size
        self._resume: dict[RequestHandle, _Seq] = {}  # rows sent back to the queue after an OOM
        self._tasks: deque[tuple[Callable[[], object], Future[object]]] = deque()  # run between steps
        # Test hook: called before every forward pass (fault injection).
        self.before_forward: Callable[[str], None] | None = None

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="saigon-engine", daemon=True)
            self._thread.start()
            self._threads_taken.wait(10)
            threads.hand_over()

    def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Stop accepting; let running and queued requests finish within the timeout; then exit."""
        with self._cond:
            self._accepting = False
            self._cond.notify_all()
        deadline = time.monotonic() + drain_timeout_s
        with self._cond:
            while (self._running or self._waiting) and time.monotonic() < deadline and self._thread is not None:
                self._cond.wait(0.05)
            for handle in list(self._waiting):
                handle.cancel()
            for seq in self._running:
                seq.handle.cancel()
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    @property
    def accepting(self) -> bool:
        return self._accepting

    def add_step_observer(self, fn: Callable[[int, int], None]) -> None:
        self._observers.append(fn)

    # ---- submission ---------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> RequestHandle:
        self._validate(request)
        handle = RequestHandle(request)
        with self._cond:
            if not self._accepting:
                raise EngineStopped("the engine is shutting down")
            if len(self._waiting) >= self.config.max_queue:
                raise EngineBusy(f"queue full ({self.config.max_queue} waiting)", retry_after_s=1.0)
            self._waiting.append(handle)
            self._cond.notify_all()
        return handle

    def generate(self, request: GenerationRequest, timeout: float | None = None) -> GenerationResult:
        return self.submit(request).result(timeout)

    def score(
        self, prompt_ids: list[int], completion_ids: list[int], adapter: AdapterRef | None, timeout: float = 120.0
    ) -> float:
        """Mean negative log-likelihood (nats per token) of `completion_ids` after `prompt_ids`.

        It runs on the engine thread between two steps, with the adapter in a slot of its own row,
        so it never disturbs the running batch; a busy cache raises `EngineBusy`.
        """
        if not prompt_ids or not completion_ids:
            raise InvalidRequest("scoring needs a prompt and a completion")
        ids = [*prompt_ids, *completion_ids]

        def loss() -> float:
            logits = self._position_logits(ids, adapter)[len(prompt_ids) - 1 :]
            value = float(F.cross_entropy(logits, torch.tensor(completion_ids, device=self.torch_device)))
            return value if math.isfinite(value) else math.inf

        return float(self._between_steps(ids, loss, timeout))  # type: ignore[arg-type]

    def prompt_logprobs(
        self, prompt_ids: list[int], adapter: AdapterRef | None, top: int, timeout: float = 120.0
    ) -> list[TokenLogprob | None]:
        """Each prompt token's log-probability given the tokens before it (None for the first), with
        the `top` most likely tokens at each position: what `echo` with `logprobs` reports."""

        def logprobs() -> list[TokenLogprob | None]:
            rows = torch.log_softmax(self._position_logits(prompt_ids, adapter), dim=-1)
            return [None, *(token_logprob(rows[i], tok, top) for i, tok in enumerate(prompt_ids[1:]))]

        return self._between_steps(prompt_ids, logprobs, timeout)  # type: ignore[return-value]

    def _between_steps(self, ids: list[int], fn: Callable[[], object], timeout: float) -> object:
        if not ids or min(ids) < 0 or max(ids) >= self.vocab_size:
            raise InvalidRequest(f"token ids must be in [0, {self.vocab_size})")
        if len(ids) > self.max_positions:
            raise InvalidRequest(f"{len(ids)} tokens exceed the model's context of {self.max_positions}")
        return self.call(fn, timeout)

    def call(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Runs `fn` on the engine thread between two steps, where torch runs on the engine's threads
        (see `threads`), and returns what it returns."""
        future: Future[object] = Future()
        with self._cond:
            if not self._accepting:
                raise EngineStopped("the engine is shutting down")
            self._tasks.append((fn, future))
            self._cond.notify_all()
        return future.result(timeout)  # type: ignore[return-value]

    def _position_logits(self, ids: list[int], adapter: AdapterRef | None) -> torch.Tensor:
        """[len(ids) - 1, vocab] float logits predicting ids[1:], with the adapter in a row of its own."""
        dev = self.adapters.acquire(adapter) if adapter is not None else None
        if adapter is not None and dev is None:
            raise EngineBusy("every adapter slot is in use by running requests", retry_after_s=1.0)
        try:
            self.lora.set_rows([dev])
            tensor = torch.tensor([ids], device=self.torch_device)
            return self.model(input_ids=tensor, use_cache=False).logits[0, :-1].float()
        finally:
            if dev is not None:
                self.adapters.release(dev)

    def _validate(self, request: GenerationRequest) -> None:
        request.sampling.validate()
        ids = request.prompt_ids
        if not ids:
            raise InvalidRequest("the prompt is empty")
        if min(ids) < 0 or max(ids) >= self.vocab_size:
            raise InvalidRequest(f"prompt token ids must be in [0, {self.vocab_size})", param="prompt")
        if len(ids) + request.sampling.max_new_tokens > self.max_positions:
            raise InvalidRequest(
                f"prompt ({len(ids)} tokens) plus max tokens ({request.sampling.max_new_tokens}) "
                f"exceeds the model's context of {self.max_positions}",
                param="max_tokens",
            )
        biased = [token for token, _ in request.sampling.logit_bias]
        if biased and (min(biased) < 0 or max(biased) >= self.vocab_size):
            raise InvalidRequest(f"logit_bias token ids must be in [0, {self.vocab_size})", param="logit_bias")

    def waiting_adapters(self) -> set[str]:
        """Names of the adapters that queued requests ask for."""
        with self._cond:
            return {h.request.adapter.name for h in self._waiting if h.request.adapter is not None}

    def stats(self) -> EngineStats:
        with self._cond:
            queue, running = len(self._waiting), len(self._running)
        mem = torch.cuda.memory_allocated(self.torch_device) if self.torch_device.type == "cuda" else 0
        return EngineStats(
            queue_depth=queue, running=running, steps=self._steps, tokens_in_total=self._tokens_in,
            tokens_out_total=self._tokens_out, requests_total=dict(self._finished),
            oom_events=self._oom_events, last_batch_size=self._last_batch,
            max_batch_size=self.config.max_batch_size, device=self.device, device_memory_bytes=mem,
            cache=self.adapters.stats(),
        )  # fmt: skip

    # ---- the loop -----------------------------------------------------------------------
    def _run(self) -> None:
        threads.take_engine_threads()
        self._threads_taken.set()
        with torch.inference_mode():
            while True:
                with self._cond:
                    if self._stop:
                        break
                    if not self._running and not self._waiting and not self._tasks:
                        self._cond.wait(0.1)
                        continue
                    tasks, self._tasks = self._tasks, deque()
                for fn, future in tasks:
                    _run_task(fn, future)
                try:
                    self._admit()
                    if self._running:
                        self._decode()
                except Exception as exc:  # keep serving: fail what was running, log the cause
                    log.exception("engine step failed")
                    self._fail_running(f"engine error: {type(exc).__name__}: {exc}")
                with self._cond:
                    self._cond.notify_all()
        self._fail_running("engine stopped", reason="cancelled")
        with self._cond:
            pending, self._waiting = list(self._waiting), deque()
            tasks, self._tasks = self._tasks, deque()
        for _, future in tasks:
            future.set_exception(EngineStopped("the engine stopped before this task ran"))
        for handle in pending:
            handle._finish(None, EngineStopped("the engine stopped before this request ran"))

    def _admit(self) -> None:
        room = min(self.config.max_batch_size, self._admit_limit) - len(self._running)
        if room <= 0:
            return
        admitted: list[_Seq] = []
        budget = self.max_prefill_tokens
        now = time.perf_counter()
        # Steps until each held slot frees if nothing more joins it: while a request starves for a
        # slot, others may still join a held slot, but only if they end no later than that slot's
        # current rows, so they fill the batch without delaying the starving request.
        horizons: dict[tuple[str, str], int] = {}
        for s in self._running:
            _extend_horizon(horizons, s)
        starving = False
        with self._cond:
            candidates = list(self._waiting)
        for handle in candidates:
            if len(admitted) >= room or budget <= 0:
                break
            req = handle.request
            if handle.cancelled:
                self._end_waiting(handle, "cancelled", self._result(handle, None, [], "", "cancelled"))
                continue
            if starving and req.adapter is not None:
                horizon = horizons.get((req.adapter.name, req.adapter.version))
                if horizon is None or _remaining(req, self._resume.get(handle)) > horizon:
                    continue
            dev: DeviceAdapter | None = None
            if req.adapter is not None:
                try:
                    dev = self.adapters.acquire(req.adapter)
                except (AdapterNotFound, AdapterRejected) as exc:
                    self._end_waiting(handle, "error", error=exc)
                    continue
                if dev is None:
                    waited = now - handle.submitted_at
                    if waited > self.config.slot_wait_timeout_s:
                        busy = EngineBusy("every adapter slot is in use by running requests")
                        self._end_waiting(handle, "busy", error=busy)
                        continue
                    starving = starving or waited > self.starvation_s
                    continue
            self._remove_waiting(handle)
            seq = self._resume.pop(handle, None)
            if seq is None:
                generator = seeded_generator(req.sampling.seed) if req.sampling.seed is not None else None
                seq = _Seq(handle, dev, IncrementalText(self.tokenizer, req.sampling.stop), generator)
            seq.dev = dev
            admitted.append(seq)
            _extend_horizon(horizons, seq)
            budget -= len(req.prompt_ids) + len(seq.generated)
        if admitted:
            self._prefill(admitted)

    def _end_waiting(
        self, handle: RequestHandle, outcome: str, result: GenerationResult | None = None,
        error: Exception | None = None,
    ) -> None:  # fmt: skip
        """Ends a queued request. It is counted before it leaves the queue, so `stats()` never shows
        an idle engine whose last requests are not counted yet."""
        handle._finish(result, error)
        self._count(outcome)
        self._remove_waiting(handle)

    def _remove_waiting(self, handle: RequestHandle) -> None:
        with self._cond, contextlib.suppress(ValueError):
            self._waiting.remove(handle)

    def _forward(self, phase: str, rows: list[_Seq], **inputs: object) -> tuple[torch.Tensor, DynamicCache]:
        self.lora.set_rows([s.dev for s in rows])
        if self.before_forward is not None:
            self.before_forward(phase)
        out = self.model(**inputs, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :], out.past_key_values

    def _prefill(self, seqs: list[_Seq]) -> None:
        # A preempted row resumes from everything it has produced so far.
        prompts = [s.request.prompt_ids + s.generated for s in seqs]
        length = max(len(p) for p in prompts)
        device = self.torch_device
        ids = torch.full((len(seqs), length), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(seqs), length), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, length - len(p) :] = torch.tensor(p)
            mask[i, length - len(p) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        try:
            logits, cache = self._forward(
                "prefill", seqs, input_ids=ids, attention_mask=mask, position_ids=positions,
                past_key_values=kvops.new_cache(),
            )  # fmt: skip
        except _OOM:
            self._on_oom()
            self._requeue(seqs)
            self._admit_limit = max(1, len(self._running) + len(seqs) // 2)
            return
        except Exception as exc:
            log.exception("prefill failed")
            for s in seqs:
                self._finish(s, "error", error=f"{type(exc).__name__}: {exc}")
            return
        for s, p in zip(seqs, prompts, strict=True):
            s.cache_len = len(p)
            if not s.generated:
                self._tokens_in += len(p)
        self._kv = kvops.merge(self._kv, kvops.BatchKV(cache, mask))
        self._running.extend(seqs)
        self._take_tokens(seqs, logits, offset=len(self._running) - len(seqs))

    def _decode(self) -> None:
        kv = self._kv
        assert kv is not None
        rows = self._running
        device = self.torch_device
        ids = torch.tensor([[s.generated[-1]] for s in rows], device=device)
        mask = torch.cat([kv.mask, torch.ones((kv.rows, 1), dtype=kv.mask.dtype, device=device)], dim=1)
        positions = torch.tensor([[s.cache_len] for s in rows], device=device)
        try:
            logits, cache = self._forward(
                "decode", rows, input_ids=ids, attention_mask=mask, position_ids=positions,
                past_key_values=kv.cache,
            )  # fmt: skip
        except _OOM:
            self._on_oom()
            self._preempt_half()
            return
        self._kv = kvops.BatchKV(cache, mask)
        for s in rows:
            s.cache_len += 1
        self._steps += 1
        self._last_batch = len(rows)
        self._admit_limit = min(self.config.max_batch_size, self._admit_limit + 1)
        self._take_tokens(rows, logits, offset=0)
        with self._cond:
            queue = len(self._waiting)
        for fn in self._observers:
            fn(len(rows), queue)

    def _take_tokens(self, seqs: list[_Seq], logits: torch.Tensor, offset: int) -> None:
        rows = [
            RowSampling(s.request.sampling, s.generator, s.request.prompt_ids, s.generated, s.request.grammar,
                        self._eos_banned if _before_min_tokens(s) else ())
            for s in seqs
        ]  # fmt: skip
        picks = sample_next(logits, rows)
        now = time.perf_counter()
        finished: list[tuple[_Seq, FinishReason]] = []
        for s, pick in zip(seqs, picks, strict=True):
            tok = pick.token_id
            s.generated.append(tok)
            if pick.logprob is not None:
                s.logprobs.append(pick.logprob)
            self._tokens_out += 1
            if s.first_token_at is None:
                s.first_token_at = now
            reason: FinishReason | None = None
            grammar = s.request.grammar
            if tok in self.eos_ids and not s.request.sampling.ignore_eos:
                reason = "stop"
                delta = ""
            else:
                delta = s.text.push(tok, match_stop=len(s.generated) >= s.request.sampling.min_new_tokens)
                if s.text.stopped:
                    reason = "stop"
            # The grammar ends the row once its value is complete (or, defensively, if it refuses).
            if reason is None and grammar is not None and (not grammar.advance(tok) or grammar.finished):
                reason = "stop"
            if reason is None and len(s.generated) >= s.request.sampling.max_new_tokens:
                reason = "length"
            if reason is None and s.handle.cancelled:
                reason = "cancelled"
            if reason is not None:
                delta += s.text.flush()
            self._emit(s, delta, tok, pick.logprob)
            if reason is not None:
                finished.append((s, reason))
        if finished:
            # Finished and counted before they leave the batch (see _end_waiting).
            try:
                for s, reason in finished:
                    self._finish(s, reason)
            finally:
                done = {id(s) for s, _ in finished}
                keep = [i for i, s in enumerate(self._running) if id(s) not in done]
                self._kv = kvops.select(self._kv, keep) if self._kv is not None else None
                self._running = [self._running[i] for i in keep]

    def _emit(self, s: _Seq, delta: str, tok: int, logprob: TokenLogprob | None) -> None:
        if s.request.on_token is None:
            return
        try:
            s.request.on_token(TokenEvent(text=delta, token_id=tok, index=len(s.generated) - 1, logprob=logprob))
        except Exception:  # a broken stream consumer cancels its own request only
            log.warning("token callback failed; cancelling request %s", s.request.request_id)
            s.handle.cancel()

    def _finish(self, s: _Seq, reason: FinishReason, error: str | None = None) -> None:
        if s.dev is not None:
            self.adapters.release(s.dev)
            s.dev = None
        if error is not None and s.request.on_token is None and not s.generated:
            s.handle._finish(None, EngineError(error))
        else:
            s.handle._finish(self._result(s.handle, s, s.generated, s.text.text, reason, error))
        self._count("error" if error else reason)

    def _result(
        self, handle: RequestHandle, s: _Seq | None, tokens: list[int], text: str,
        reason: FinishReason, error: str | None = None,
    ) -> GenerationResult:  # fmt: skip
        now = time.perf_counter()
        first = s.first_token_at if s is not None else None
        return GenerationResult(
            text=text, token_ids=list(tokens), finish_reason=reason,
            prompt_tokens=len(handle.request.prompt_ids), completion_tokens=len(tokens),
            adapter=handle.request.adapter,
            time_to_first_token_s=(first - handle.submitted_at) if first is not None else None,
            latency_s=now - handle.submitted_at, error=error,
            logprobs=list(s.logprobs) if s is not None and handle.request.sampling.logprobs is not None else None,
        )  # fmt: skip

    def _count(self, outcome: str) -> None:
        self._finished[outcome] = self._finished.get(outcome, 0) + 1

    def _fail_running(self, message: str, reason: FinishReason = "error") -> None:
        try:
            for s in self._running:
                self._finish(s, reason, error=message if reason == "error" else None)
        finally:
            self._running, self._kv = [], None

    # ---- out of memory ------------------------------------------------------------------
    def _on_oom(self) -> None:
        self._oom_events += 1
        log.warning("out of memory: dropping cached compositions and idle slots, shrinking the batch")
        self.lora.clear()
        self.adapters.pool.evict_idle()
        if self.torch_device.type == "cuda":
            torch.cuda.empty_cache()

    def _preempt_half(self) -> None:
        """Send the newest half of the running rows back to the queue; they resume later."""
        n = len(self._running)
        if n <= 1:
            self._fail_running("out of memory even for a single request")
            return
        keep = list(range(n - n // 2))
        preempted = self._running[len(keep) :]
        self._kv = kvops.select(self._kv, keep) if self._kv is not None else None
        self._running = self._running[: len(keep)]
        self._requeue(preempted)
        self._admit_limit = len(keep)

    def _requeue(self, seqs: list[_Seq]) -> None:
        for s in seqs:
            if s.dev is not None:
                self.adapters.release(s.dev)
                s.dev = None
            self._resume[s.handle] = s
        with self._cond:
            self._waiting.extendleft(reversed([s.handle for s in seqs]))


def _run_task(fn: Callable[[], object], future: Future[object]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(fn())
    except Exception as exc:  # the caller gets it; the engine keeps serving
        future.set_exception(exc)


def _remaining(request: GenerationRequest, seq: _Seq | None) -> int:
    return request.sampling.max_new_tokens - (len(seq.generated) if seq is not None else 0)


def _before_min_tokens(seq: _Seq) -> bool:
    sampling = seq.request.sampling
    return len(seq.generated) < sampling.min_new_tokens and not sampling.ignore_eos


def _extend_horizon(horizons: dict[tuple[str, str], int], seq: _Seq) -> None:
    if seq.dev is not None:
        key = seq.dev.key
        horizons[key] = max(horizons.get(key, 0), _remaining(seq.request, seq))


def _sampling_defaults(model: torch.nn.Module) -> SamplingDefaults:
    """What the model's generation_config.json sets, of what the engine implements; a value
    outside the range a request may ask for is left out (the API's default applies)."""
    config = getattr(model, "generation_config", None)
    declared: dict[str, object] = config.to_diff_dict() if config is not None else {}
    ranges = {"temperature": (0.0, 2.0), "top_p": (1e-9, 1.0), "repetition_penalty": (1e-9, REPETITION_PENALTY_MAX)}
    found: dict[str, float] = {}
    for name, (low, high) in ranges.items():
        value = declared.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high:
            found[name] = float(value)
        elif value is not None:
            log.warning("ignoring the model's generation_config %s=%r: outside [%s, %s]", name, value, low, high)
    min_new = declared.get("min_new_tokens")
    valid = isinstance(min_new, int) and not isinstance(min_new, bool) and 0 <= min_new <= MIN_NEW_TOKENS_DEFAULT_MAX
    if min_new is not None and not valid:
        log.warning(
            "ignoring the model's generation_config min_new_tokens=%r: not in [0, %s]",
            min_new,
            MIN_NEW_TOKENS_DEFAULT_MAX,
        )
    return SamplingDefaults(
        temperature=found.get("temperature"),
        top_p=found.get("top_p"),
        repetition_penalty=found.get("repetition_penalty"),
        min_new_tokens=min_new if valid and isinstance(min_new, int) else None,
    )


def _eos_ids(model: torch.nn.Module, tokenizer: object) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids
