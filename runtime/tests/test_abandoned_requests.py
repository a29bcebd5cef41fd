"""A client that gives up on a non-streaming request frees its engine row at once: 40 abandoned
long requests do not hold the batch, and the next request runs alone (engine counts, not time)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from engine_helpers import wait_for
from server_support import LiveServer, live_server, make_config

ABANDONED = 40
BATCH = 32  # rows the engine runs at once
LONG = 400  # tokens each abandoned request asked for


@pytest.fixture
def server(tiny_llama_dir: Path) -> Iterator[LiveServer]:
    config = make_config(tiny_llama_dir, max_batch_size=BATCH, max_queue=64, max_new_tokens=LONG)
    with live_server(config) as live:
        yield live


def send_and_leave_open(url: str, body: dict[str, object]) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    data = json.dumps(body).encode()
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    sock.sendall(head + data)
    return sock


def test_abandoned_requests_free_their_rows_within_a_step(server: LiveServer) -> None:
    engine = server.engine
    body = {"model": engine.model_id, "prompt": "the cat", "max_tokens": LONG, "ignore_eos": True, "temperature": 0}
    sockets = [send_and_leave_open(server.url, body) for _ in range(ABANDONED)]
    # All of them in the engine before they are abandoned: a handler cancelled before it submits
    # (the client went away while it was still being prepared) never reaches the engine at all.
    wait_for(
        lambda: (stats := engine.stats()).running == BATCH and stats.queue_depth == ABANDONED - BATCH,
        "the batch to fill and the rest to queue",
    )
    before = engine.stats()
    for sock in sockets:
        sock.close()
    wait_for(lambda: engine.stats().running == 0 and engine.stats().queue_depth == 0, "the rows to be freed")
    after = engine.stats()
    # Each row notices its cancellation at its next token; the event loop needs a few steps to
    # see 40 closed sockets on a busy 2-core machine, far from the ~400 steps the rows asked for.
    assert after.steps - before.steps <= 40, (before.steps, after.steps)
    assert after.requests_total.get("cancelled", 0) == ABANDONED
    assert after.tokens_out_total - before.tokens_out_total < 40 * BATCH

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
    steps = engine.stats().steps
    answer = client.completions.create(
        model=engine.model_id, prompt="the dog", max_tokens=8, extra_body={"ignore_eos": True}
    )
    assert answer.usage is not None and answer.usage.completion_tokens == 8
    final = engine.stats()
    assert final.steps - steps == 7  # prefill gives the first token, then 7 decode steps with nobody else
    assert final.last_batch_size == 1
