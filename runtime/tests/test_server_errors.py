"""Every error is OpenAI-shaped JSON with the status where it belongs; bad input is never a 500."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from saigon_runtime.testing.tiny import install_adapter
from server_support import LiveServer, live_server, make_config

BODY_LIMIT = 16 * 1024


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, adapter_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("errors")
    install_adapter(root / "adapters", "user_alice", "v1", adapter_factory(tiny_llama_dir, seed=1))
    config = make_config(
        tiny_llama_dir, adapters_dir=root / "adapters", max_body_bytes=BODY_LIMIT, max_queue=1, max_batch_size=1
    )
    with live_server(config) as live:
        yield live


def error_of(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def post(server: LiveServer, path: str, **kwargs: Any) -> requests.Response:
    return requests.post(f"{server.url}{path}", timeout=60, **kwargs)


def test_a_body_over_the_limit_is_413(server: LiveServer) -> None:
    big = {"model": "user_alice", "prompt": "x" * (BODY_LIMIT + 10)}
    assert error_of(post(server, "/v1/completions", json=big), 413)["type"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading, too
        yield b'{"model": "user_alice", "prompt": "'
        for _ in range(BODY_LIMIT // 1000 + 1):
            yield b"y" * 1000
        yield b'"}'

    error_of(post(server, "/v1/completions", data=chunks()), 413)


def test_malformed_bodies_are_400(server: LiveServer) -> None:
    for data in (b"", b"   ", b"{not json", b'{"model": "user_alice", "prompt": "unterminated'):
        error = error_of(post(server, "/v1/completions", data=data), 400)
        assert error["code"] == "invalid_json"


def test_schema_violations_are_400_naming_the_field(server: LiveServer) -> None:
    cases = [
        ("/v1/completions", {"model": "user_alice"}, "prompt"),
        ("/v1/completions", {"model": "user_alice", "prompt": "x", "max_tokens": "5"}, "max_tokens"),
        ("/v1/completions", {"model": "user_alice", "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ("/v1/chat/completions", {"model": "user_alice", "messages": [{"role": "robot", "content": "x"}]},
         "messages.0.role"),
        ("/api/saigon/infer", {"input_text": "x", "user_id": "../etc"}, "user_id"),
        ("/api/saigon/infer", {"input_text": "x", "temperature": -1}, "temperature"),
        ("/api/saigon/infer/batch", {"requests": []}, "requests"),
    ]  # fmt: skip
    for path, body, param in cases:
        error = error_of(post(server, path, json=body), 400)
        assert error["param"] == param, (path, body, error)
        assert error["type"] == "invalid_request_error"


def test_a_prompt_longer_than_the_context_is_400(server: LiveServer) -> None:
    long_prompt = "the cat and the dog " * 200
    error = error_of(post(server, "/v1/completions", json={"model": "user_alice", "prompt": long_prompt}), 400)
    assert error["type"] == "invalid_request_error" and "context" in error["message"]


def test_unknown_routes_models_and_methods(server: LiveServer) -> None:
    assert error_of(requests.get(f"{server.url}/v2/nothing", timeout=10), 404)["type"] == "not_found_error"
    error = error_of(post(server, "/v1/completions", json={"model": "domain_nowhere", "prompt": "x"}), 404)
    assert error["code"] == "model_not_found"
    error = error_of(post(server, "/api/saigon/infer", json={"input_text": "x", "adapter": "domain_none"}), 404)
    assert error["code"] == "adapter_not_found"
    response = requests.put(f"{server.url}/v1/completions", json={}, timeout=10)
    error_of(response, 405)
    assert response.headers["Allow"] == "POST"


def test_the_mesh_api_without_a_mesh_directory_is_409(server: LiveServer) -> None:
    response = requests.put(f"{server.url}/api/saigon/mesh/alice", json={"nodes": [], "edges": []}, timeout=10)
    assert error_of(response, 409)["code"] == "mesh_disabled"


def test_a_full_queue_is_429_with_retry_after(server: LiveServer) -> None:
    engine = server.engine
    entered, gate = threading.Event(), threading.Event()

    def hold(phase: str) -> None:
        entered.set()
        gate.wait(30)

    body = {"model": "user_alice", "prompt": "the cat", "max_tokens": 2}
    engine.before_forward = hold
    try:
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(post, server, "/v1/completions", json=body)
            assert entered.wait(30), "the first request never reached the model"
            queued = pool.submit(post, server, "/v1/completions", json=body)
            deadline = time.monotonic() + 30
            while engine.stats().queue_depth < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            for extra in (body, {**body, "stream": True}):
                refused = post(server, "/v1/completions", json=extra)
                assert error_of(refused, 429)["type"] == "rate_limit_error"
                assert int(refused.headers["Retry-After"]) >= 1
            gate.set()
            assert running.result(60).status_code == 200
            assert queued.result(60).status_code == 200
    finally:
        engine.before_forward = None
        gate.set()
