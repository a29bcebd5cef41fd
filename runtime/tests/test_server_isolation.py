"""Isolation by default (issue 15 item 11): with a tokens file (what the operator mounts from the
Secret it creates) inference auth is on, anonymous callers reach no user's data, a tenant reaches
only their own, and rotating the file takes effect without a restart."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from saigon_runtime.audit import AuditLog, AuditRecord
from saigon_runtime.config import RuntimeConfig
from saigon_runtime.testing.tiny import install_adapter
from saigon_runtime.tokens import InvalidTokens, TokenFile, parse_tokens
from server_support import ADMIN_TOKEN, LiveServer, live_server, make_config

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789"
GRAPH = {"nodes": [{"id": "n", "label": "secret", "text": "alice's private note"}], "edges": []}


def write_tokens(path: Path, text: str) -> None:
    """As the kubelet updates a Secret volume: a new file swapped in (a new inode)."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "inference-tokens"
    write_tokens(path, f"{ALICE}=alice\n{BOB}=bob\n")
    return path


@pytest.fixture(scope="module")
def server(
    tiny_llama_dir: Path, adapter_factory, tokens_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    work = tmp_path_factory.mktemp("isolation")
    install_adapter(work / "adapters", "user_alice", "v1", adapter_factory(tiny_llama_dir, seed=1))
    config = make_config(tiny_llama_dir, adapters_dir=work / "adapters", mesh_dir=work / "mesh",
                         inference_tokens_file=tokens_file)  # fmt: skip
    with live_server(config) as live:
        requests.put(f"{live.url}/api/saigon/mesh/alice", json=GRAPH, timeout=10,
                     headers={"Authorization": f"Bearer {ALICE}"}).raise_for_status()  # fmt: skip
        yield live


def call(
    server: LiveServer, method: str, path: str, token: str | None = None, *, headers: dict[str, str] | None = None,
    **kwargs: object,
) -> requests.Response:  # fmt: skip
    sent = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    return requests.request(method, f"{server.url}{path}", headers=sent, timeout=60, **kwargs)  # type: ignore[arg-type]


def test_an_anonymous_caller_reaches_no_users_data(server: LiveServer) -> None:
    assert call(server, "GET", "/api/saigon/mesh/alice").status_code == 401
    assert call(server, "PUT", "/api/saigon/mesh/bob", json=GRAPH).status_code == 401
    completion = {"model": "user_alice", "prompt": "x", "max_tokens": 1}
    assert call(server, "POST", "/v1/completions", json=completion).status_code == 401
    assert call(server, "POST", "/api/saigon/infer", json={"user_id": "alice", "input_text": "x"}).status_code == 401
    assert call(server, "GET", "/api/saigon/status").status_code == 401


def test_a_tenant_reaches_only_their_own(server: LiveServer) -> None:
    assert call(server, "GET", "/api/saigon/mesh/alice", BOB).status_code == 403
    assert call(server, "PUT", "/api/saigon/mesh/alice", BOB, json=GRAPH).status_code == 403
    completion = {"model": "user_alice", "prompt": "x", "max_tokens": 1}
    assert call(server, "POST", "/v1/completions", BOB, json=completion).status_code == 403
    spoofed = call(server, "POST", "/v1/completions", BOB, json={**completion, "model": server.engine.model_id},
                   headers={"X-Saigon-User": "alice"})  # fmt: skip
    assert spoofed.status_code == 403 and spoofed.json()["error"]["param"] == "X-Saigon-User"
    assert call(server, "POST", "/v1/completions", ALICE, json=completion).status_code == 200
    status = call(server, "GET", "/api/saigon/status", BOB).json()
    assert status["current_user"] is None and status["current_adapter"] is None
    assert call(server, "GET", "/api/saigon/status", ALICE).json()["current_user"] == "alice"


def test_rotating_the_tokens_file_takes_effect_without_a_restart(server: LiveServer, tokens_file: Path) -> None:
    rotated = "alice-rotated-token-0123456789"
    write_tokens(tokens_file, f"{rotated}=alice\n{BOB}=bob\n")
    deadline = time.monotonic() + 5
    while call(server, "GET", "/api/saigon/mesh/alice", ALICE).status_code != 401:
        assert time.monotonic() < deadline, "the old token still works"
        time.sleep(0.1)
    assert call(server, "GET", "/api/saigon/mesh/alice", rotated).status_code == 200
    # A broken edit keeps the last good credentials (neither open nor locked).
    write_tokens(tokens_file, "no equals sign here\n")
    time.sleep(1.2)
    assert call(server, "GET", "/api/saigon/mesh/alice", rotated).status_code == 200
    write_tokens(tokens_file, f"{ALICE}=alice\n{BOB}=bob\n")


def test_an_empty_tokens_file_is_closed_not_open(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("")
    source = TokenFile(path)
    assert source.tokens() == {}
    config = RuntimeConfig.from_env({"SAIGON_INFERENCE_TOKENS_FILE": str(path), "SAIGON_ADMIN_TOKEN": ADMIN_TOKEN})
    assert config.inference_tokens_file == path  # (the server test above runs one for real)


def test_the_tokens_formats(tmp_path: Path) -> None:
    assert parse_tokens("t1=alice, t2=bob") == {"t1": "alice", "t2": "bob"}  # the existing env format
    assert parse_tokens("# comment\nt1=alice\n\nt2=bob,t3=carol\n") == {"t1": "alice", "t2": "bob", "t3": "carol"}
    for bad in ("bare-token", "t1=", "=alice", "t1=alice\n", "t1=../x"):
        if bad == "t1=alice\n":
            assert parse_tokens(bad) == {"t1": "alice"}  # a trailing newline ends a line, not a user id
            continue
        with pytest.raises(InvalidTokens):
            parse_tokens(bad)
    with pytest.raises(InvalidTokens):
        RuntimeConfig.from_env({"SAIGON_INFERENCE_TOKENS": "only-a-token"})


def test_the_audit_log_can_write_json_lines_to_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    with AuditLog.to_stdout(salt=b"s" * 32) as audit:
        metadata = {"max_length": 8, "temperature": 0.0, "system_prompt": "be nice"}
        audit.write(AuditRecord("r1", "alice", "user_alice", "v1", True, "cpu", 1.5, 3, 2, "stop", metadata=metadata))
    (line,) = [json.loads(x) for x in capfd.readouterr().out.splitlines()]
    assert line["user_id"] != "alice" and line["user_id_hashed"] is True and "alice" not in json.dumps(line)
    assert line["metadata"] == {"max_length": 8, "temperature": 0.0, "system_prompt": "[redacted]"}
    assert line["mesh_context_used"] is True and line["adapter_active"] == "v1"
