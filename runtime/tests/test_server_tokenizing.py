"""Prompts are tokenized in worker threads, a few at a time, never on the event loop: four
197k-character prompts used to push /healthz from 2 ms to 265 ms (issue 15, item 7)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import requests
from server_support import live_server, make_config


def test_prompts_are_tokenized_off_the_event_loop_a_few_at_a_time(
    tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with live_server(make_config(tiny_llama_dir, tokenize_concurrency=2)) as live:
        tokenizer = live.engine.tokenizer
        real_encode = tokenizer.encode
        release = threading.Event()
        lock = threading.Lock()
        active, peak, threads = [0], [0], set()

        def held_encode(text: str, *args: Any, **kwargs: Any) -> Any:
            # Stands in for a huge prompt: the tokenizer is busy until the test lets it go.
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                threads.add(threading.current_thread().name)
            try:
                release.wait(60)
                return real_encode(text, *args, **kwargs)
            finally:
                with lock:
                    active[0] -= 1

        monkeypatch.setattr(tokenizer, "encode", held_encode)
        model = live.engine.model_id
        bodies: list[tuple[str, dict[str, Any]]] = [
            ("/v1/completions", {"model": model, "prompt": "the cat", "max_tokens": 2}),
            ("/v1/completions", {"model": model, "prompt": "the dog", "max_tokens": 2}),
            (
                "/v1/chat/completions",
                {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            ),
            ("/api/saigon/infer", {"input_text": "the sea", "max_length": 2}),
        ]
        statuses: list[int] = []

        def send(path: str, body: dict[str, Any]) -> None:
            statuses.append(requests.post(f"{live.url}{path}", json=body, timeout=120).status_code)

        clients = [threading.Thread(target=send, args=item) for item in bodies]
        try:
            for client in clients:
                client.start()
            deadline = threading.Event()
            for _ in range(600):
                if active[0] >= 2:
                    break
                deadline.wait(0.05)
            assert active[0] == 2, "two tokenizations should be running"
            # The loop is free while the tokenizer works: probes and other routes answer.
            assert requests.get(f"{live.url}/healthz", timeout=10).status_code == 200
            assert requests.get(f"{live.url}/readyz", timeout=10).status_code == 200
            deadline.wait(0.3)
            assert peak[0] == 2, "no more than tokenize_concurrency prompts are tokenized at once"
        finally:
            release.set()
            for client in clients:
                client.join(120)
        assert statuses == [200, 200, 200, 200]
        assert "live-server" not in threads, "a prompt was tokenized on the event loop's thread"
