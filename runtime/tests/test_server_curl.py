"""The API from `curl`, as an operator would use it: JSON, a streamed answer, auth and limits."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from saigon_runtime.testing.tiny import install_adapter
from server_support import ADMIN_TOKEN, LiveServer, live_server, make_config

BODY_LIMIT = 8192


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, adapter_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    adapters = tmp_path_factory.mktemp("curl") / "adapters"
    install_adapter(adapters, "user_alice", "v1", adapter_factory(tiny_llama_dir, seed=1))
    with live_server(make_config(tiny_llama_dir, adapters_dir=adapters, max_body_bytes=BODY_LIMIT)) as live:
        yield live


def curl(*args: str) -> tuple[int, str]:
    """(HTTP status, body) of one curl call."""
    executable = shutil.which("curl")
    assert executable is not None, "curl is missing: run scripts/system-deps.sh"
    done = subprocess.run(
        [executable, "-sS", "--max-time", "60", "-w", "\n%{http_code}", *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def test_infer_with_curl(server: LiveServer) -> None:
    status, body = curl(
        "-H", "Content-Type: application/json",
        "-d", '{"user_id": "alice", "input_text": "the cat", "max_length": 4, "temperature": 0}',
        f"{server.url}/api/saigon/infer",
    )  # fmt: skip
    assert status == 200
    answer = json.loads(body)
    assert answer["adapter_used"] == "user_alice" and answer["completion_tokens"] == 4


def test_a_streamed_chat_with_curl(server: LiveServer) -> None:
    request = {"model": "user_alice", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
               "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    status, body = curl("-N", "-H", "Content-Type: application/json", "-d", json.dumps(request),
                        f"{server.url}/v1/chat/completions")  # fmt: skip
    assert status == 200
    events = [line for line in body.splitlines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["usage"]["completion_tokens"] == 5


def test_admin_with_and_without_the_token(server: LiveServer) -> None:
    status, body = curl(f"{server.url}/admin/adapters")
    assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error"
    status, body = curl("-H", f"Authorization: Bearer {ADMIN_TOKEN}", f"{server.url}/admin/adapters")
    assert status == 200 and [a["name"] for a in json.loads(body)["adapters"]] == ["user_alice"]


def test_an_oversized_upload_with_curl_is_413(server: LiveServer, tmp_path: Path) -> None:
    upload = tmp_path / "big.json"
    upload.write_text(json.dumps({"model": "user_alice", "prompt": "z" * BODY_LIMIT}))
    status, body = curl("-H", "Content-Type: application/json", "--data-binary", f"@{upload}",
                        f"{server.url}/v1/completions")  # fmt: skip
    assert status == 413 and json.loads(body)["error"]["type"] == "request_too_large"


def test_an_unknown_field_is_refused_by_name_with_curl(server: LiveServer) -> None:
    request = {"model": "user_alice", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "top_k": 3}
    status, body = curl("-H", "Content-Type: application/json", "-d", json.dumps(request),
                        f"{server.url}/v1/chat/completions")  # fmt: skip
    assert status == 400
    error = json.loads(body)["error"]
    assert error["param"] == "top_k" and error["type"] == "invalid_request_error"
