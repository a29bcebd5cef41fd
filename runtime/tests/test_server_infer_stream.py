"""The original API: `stream: true` on /api/saigon/infer sends server-sent events; `stop` and
`top_p` take effect there too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from server_support import LiveServer, live_server, make_config

BODY: dict[str, Any] = {"input_text": "the cat and the dog", "temperature": 0, "max_length": 12}


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path) -> Iterator[LiveServer]:
    with live_server(make_config(tiny_llama_dir)) as live:
        yield live


def infer(server: LiveServer, **extra: Any) -> requests.Response:
    return requests.post(f"{server.url}/api/saigon/infer", json={**BODY, **extra}, timeout=60, stream=True)


def events(response: requests.Response) -> list[Any]:
    assert response.headers["Content-Type"].startswith("text/event-stream")
    out = []
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            payload = line.removeprefix(b"data: ")
            out.append(payload.decode() if payload == b"[DONE]" else json.loads(payload))
    return out


def test_stream_sends_text_deltas_then_the_whole_answer(server: LiveServer) -> None:
    whole = infer(server).json()
    streamed = events(infer(server, stream=True))
    assert streamed[-1] == "[DONE]"
    last = streamed[-2]
    assert last["result"]["output"] == whole["output"]
    assert last["result"]["completion_tokens"] == whole["completion_tokens"]
    assert "".join(e["text"] for e in streamed[:-1]) == whole["output"]
    assert all(e["result"] is None for e in streamed[:-2])


def test_stop_and_top_p_take_effect(server: LiveServer) -> None:
    whole = infer(server, max_length=24).json()["output"]
    assert len(whole) > 3
    stop = whole[2:4]
    cut = infer(server, max_length=24, stop=[stop]).json()
    assert cut["output"] == whole[: whole.index(stop)] and cut["finish_reason"] == "stop"
    streamed = events(infer(server, max_length=24, stop=stop, stream=True))
    assert "".join(e["text"] for e in streamed[:-1]) == cut["output"]
    # A tiny nucleus keeps only the most likely token: sampling at temperature 1 becomes greedy.
    sampled = {infer(server, temperature=1.0, top_p=1e-6, max_length=24).json()["output"] for _ in range(3)}
    assert sampled == {whole}
    bad = infer(server, top_p=0)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "top_p"
