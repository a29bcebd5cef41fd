"""Continuous batching, stop strings, streaming, cancellation and fault isolation."""

from __future__ import annotations

import sys
import threading
import time

import pytest
import torch
from engine_helpers import GREEDY, make_engine, request
from saigon_runtime.adapters.types import AdapterRef
from saigon_runtime.engine.types import GenerationRequest, SamplingParams, TokenEvent
from saigon_runtime.errors import EngineError, InvalidRequest

PROMPTS = ["the cat and the dog", "hello world", "a ship on the sea", "red blue green", "code data"]


@pytest.fixture
def engine(tiny_llama_dir, adapter_factory, adapters_dir, install):
    for i in range(3):
        install(adapters_dir, f"user_u{i}", "v1", adapter_factory(tiny_llama_dir, rank=4, seed=30 + i))
    eng = make_engine(tiny_llama_dir, adapters_dir, max_loras=4)
    yield eng
    eng.stop()


def _ids(engine, text):
    return engine.tokenizer(text)["input_ids"]


def _solo(engine, ids, adapter, sampling=GREEDY):
    return engine.submit(request(ids, adapter, sampling)).result(60).token_ids


def test_requests_joining_a_running_batch_get_the_same_tokens(engine):
    long = SamplingParams(temperature=0.0, max_new_tokens=40, ignore_eos=True)
    a0 = AdapterRef("user_u0", "v1")
    expected_long = _solo(engine, _ids(engine, PROMPTS[0]), a0, long)
    expected = [_solo(engine, _ids(engine, p), AdapterRef(f"user_u{i % 3}", "v1")) for i, p in enumerate(PROMPTS)]

    started = threading.Event()
    first = engine.submit(
        GenerationRequest(
            prompt_ids=_ids(engine, PROMPTS[0]), adapter=a0, sampling=long,
            on_token=lambda ev: started.set() if ev.index >= 3 else None,
        )
    )  # fmt: skip
    assert started.wait(30)
    late = [engine.submit(request(_ids(engine, p), AdapterRef(f"user_u{i % 3}", "v1"))) for i, p in enumerate(PROMPTS)]
    assert [h.result(60).token_ids for h in late] == expected
    assert first.result(60).token_ids == expected_long
    assert engine.stats().steps > 0


def test_stop_strings_cut_the_text_and_streams_never_show_past_them(engine):
    ids = _ids(engine, PROMPTS[1])
    free = engine.submit(request(ids, None, SamplingParams(temperature=0.0, max_new_tokens=24, ignore_eos=True)))
    text = free.result(60).text
    assert len(text) > 6
    stop = text[3:6]
    streamed: list[str] = []
    handle = engine.submit(
        GenerationRequest(
            prompt_ids=ids, adapter=None,
            sampling=SamplingParams(temperature=0.0, max_new_tokens=24, stop=(stop,), ignore_eos=True),
            on_token=lambda ev: streamed.append(ev.text),
        )
    )  # fmt: skip
    result = handle.result(60)
    assert result.finish_reason == "stop"
    assert result.text == text[: text.index(stop)]
    assert "".join(streamed) == result.text


def test_max_tokens_and_streamed_text_add_up(engine):
    events: list[TokenEvent] = []
    ids = _ids(engine, PROMPTS[2])
    req = request(ids, AdapterRef("user_u1", "v1"), SamplingParams(temperature=0.9, max_new_tokens=7, seed=5,
                                                                    ignore_eos=True))  # fmt: skip
    req.on_token = events.append
    result = engine.submit(req).result(60)
    assert result.finish_reason == "length" and result.completion_tokens == 7
    assert [e.index for e in events] == list(range(7))
    assert "".join(e.text for e in events) == result.text
    again = request(ids, AdapterRef("user_u1", "v1"), req.sampling)
    assert engine.submit(again).result(60).token_ids == result.token_ids  # same seed, same tokens


def test_cancellation_finishes_the_request_early(engine):
    seen = threading.Event()
    req = request(_ids(engine, PROMPTS[0]), None, SamplingParams(temperature=0.0, max_new_tokens=400, ignore_eos=True))
    req.on_token = lambda ev: (seen.set(), time.sleep(0.002))
    handle = engine.submit(req)
    assert seen.wait(30)
    handle.cancel()
    result = handle.result(30)
    assert result.finish_reason == "cancelled"
    assert result.completion_tokens < 400


def test_invalid_requests_are_refused_before_queueing(engine):
    with pytest.raises(InvalidRequest, match="empty"):
        engine.submit(request([], None))
    with pytest.raises(InvalidRequest, match="token ids"):
        engine.submit(request([10**6], None))
    with pytest.raises(InvalidRequest, match="context"):
        engine.submit(request([5] * 10, None, SamplingParams(max_new_tokens=10**6)))
    with pytest.raises(InvalidRequest, match="temperature"):
        engine.submit(request([5], None, SamplingParams(temperature=-1)))


def test_out_of_memory_preempts_half_the_batch_and_everyone_still_finishes(engine):
    jobs = [(_ids(engine, p), AdapterRef(f"user_u{i % 3}", "v1")) for i, p in enumerate(PROMPTS)]
    expected = [_solo(engine, ids, a) for ids, a in jobs]
    fired = []

    def oom_once(phase: str) -> None:
        if phase == "decode" and not fired and engine.stats().running >= 4:
            fired.append(phase)
            raise torch.cuda.OutOfMemoryError("injected")

    engine.before_forward = oom_once
    handles = [engine.submit(request(ids, a)) for ids, a in jobs]
    assert [h.result(60).token_ids for h in handles] == expected
    assert fired and engine.stats().oom_events == 1


def test_a_failing_prefill_fails_only_its_own_requests(engine):
    ids = _ids(engine, PROMPTS[0])
    long = SamplingParams(temperature=0.0, max_new_tokens=60, ignore_eos=True)
    expected = _solo(engine, ids, None, long)
    started = threading.Event()
    running = request(ids, None, long)
    running.on_token = lambda ev: (started.set(), time.sleep(0.001))
    survivor = engine.submit(running)
    assert started.wait(30)

    def broken_prefill(phase: str) -> None:
        if phase == "prefill":
            raise RuntimeError("injected prefill fault")

    engine.before_forward = broken_prefill
    victim = engine.submit(request(_ids(engine, PROMPTS[1]), AdapterRef("user_u2", "v1")))
    with pytest.raises(EngineError, match="injected prefill fault"):
        victim.result(30)
    engine.before_forward = None
    assert survivor.result(60).token_ids == expected
    assert engine.submit(request(ids, None)).result(30).finish_reason in ("length", "stop")


def test_a_tiny_temperature_samples_greedily_and_fails_no_one(engine):
    ids = _ids(engine, PROMPTS[0])
    greedy = _solo(engine, ids, None)
    tiny = SamplingParams(temperature=1e-30, max_new_tokens=8)
    others = [engine.submit(request(_ids(engine, p), None)) for p in PROMPTS[1:]]
    assert engine.submit(request(ids, None, tiny)).result(30).token_ids == greedy
    assert all(h.result(30).finish_reason in ("length", "stop") for h in others)


def test_an_idle_engine_has_counted_every_request_it_ended(engine):
    """stats() never shows an engine with no row left whose last requests are not counted yet (a
    watcher of `running` would read the counts too early)."""
    ids = _ids(engine, PROMPTS[0])
    long = SamplingParams(temperature=0.0, max_new_tokens=400, ignore_eos=True)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the watcher gets the GIL between any two steps of the engine thread
    try:
        _cancel_and_watch(engine, ids, long)
    finally:
        sys.setswitchinterval(interval)


def _cancel_and_watch(engine, ids, long):
    for attempt in range(3):
        started = threading.Event()
        handles = []
        for _ in range(8):
            req = request(ids, None, long)
            req.on_token = lambda ev, started=started: started.set()
            handles.append(engine.submit(req))
        assert started.wait(30)
        before = engine.stats().requests_total.get("cancelled", 0)
        for handle in handles:
            handle.cancel()
        early = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stats = engine.stats()
            if stats.running == 0 and stats.queue_depth == 0:
                if stats.requests_total.get("cancelled", 0) - before != len(handles):
                    early.append(stats.requests_total)
                break
        assert early == [], f"attempt {attempt}: idle with uncounted requests"
        assert all(h.result(30).finish_reason == "cancelled" for h in handles)
