"""The per-user layer on every route (issue 13): who is asking, `model: user_<id>` with its
cascade and reason, mesh context on the OpenAI routes, admin-set domains, the audit record of an
OpenAI request, and two replicas sharing a PostgreSQL user store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
from saigon_runtime.mesh.sanitize import CONTEXT_CLOSE, CONTEXT_OPEN
from saigon_runtime.testing.tiny import install_adapter
from server_support import ADMIN_TOKEN, LiveServer, live_server, make_config

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FACT = "jason keeps seven goats on a hill"
GRAPH: dict[str, Any] = {
    "nodes": [
        {"id": "goats", "label": "goats", "text": FACT, "weight": 2.0},
        {"id": "ships", "label": "ships", "text": "a boat on the river"},
    ],
    "edges": [],
}
QUESTION = "how many goats do I keep"


@pytest.fixture(scope="module")
def adapters(tiny_llama_dir: Path, adapter_factory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("peruser") / "adapters"
    install_adapter(root, "user_alice", "v1", adapter_factory(tiny_llama_dir, seed=1))
    install_adapter(root, "domain_cooking", "v1", adapter_factory(tiny_llama_dir, seed=2))
    install_adapter(root, "global", "g1", adapter_factory(tiny_llama_dir, seed=3))
    return root


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, adapters: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    work = tmp_path_factory.mktemp("peruser-run")
    config = make_config(tiny_llama_dir, adapters_dir=adapters, mesh_dir=work / "mesh", log_dir=work / "logs",
                         log_prompts=True)  # fmt: skip
    with live_server(config) as live:
        yield live


def openai_client(server: LiveServer, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60, **options)


def audit_entry(server: LiveServer, request_id: str) -> dict[str, Any]:
    audit = server.state.audit
    assert audit is not None and audit.log_dir is not None
    audit.flush(10)
    for path in audit.log_dir.glob("inference_*.jsonl"):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry["request_id"] == request_id:
                return dict(entry)
    raise AssertionError("request not audited")


def test_a_user_without_an_adapter_gets_global_with_the_reason(server: LiveServer) -> None:
    raw = openai_client(server).completions.with_raw_response.create(
        model="user_jason", prompt="the cat", max_tokens=2, temperature=0
    )
    assert raw.headers["X-Saigon-Adapter"] == "global"
    assert raw.headers["X-Saigon-Adapter-Version"] == "g1"
    assert raw.headers["X-Saigon-Adapter-Scope"] == "global"
    assert raw.headers["X-Saigon-Fallback-Reason"] == "user_jason: missing"
    # A user's own adapter: scope user, no fallback.
    own = openai_client(server).completions.with_raw_response.create(model="user_alice", prompt="x", max_tokens=1)
    assert own.headers["X-Saigon-Adapter-Scope"] == "user" and "X-Saigon-Fallback-Reason" not in own.headers
    # The user may come from the header alone (what the router hashes on) with the base model named.
    base = server.engine.model_id
    via_header = openai_client(server, default_headers={"X-Saigon-User": "jason"}).completions.with_raw_response
    answer = via_header.create(model=base, prompt="x", max_tokens=1)
    assert answer.headers["X-Saigon-Adapter-Scope"] == "base" and "X-Saigon-Adapter" not in answer.headers
    assert audit_entry(server, answer.parse().id)["user_id"] is not None  # the header's user, hashed


def test_an_admin_set_domain_takes_its_place_in_the_cascade(server: LiveServer) -> None:
    url = f"{server.url}/admin/users/jason/domain"
    assert requests.put(url, json={"domain": "cooking"}, timeout=10).status_code == 401
    assert requests.put(url, json={"domain": "cooking"}, headers=ADMIN, timeout=10).json() == {
        "user_id": "jason",
        "domain": "cooking",
    }
    raw = openai_client(server).chat.completions.with_raw_response.create(
        model="user_jason", messages=[{"role": "user", "content": "hi"}], max_tokens=1
    )
    assert raw.headers["X-Saigon-Adapter"] == "domain_cooking"
    assert raw.headers["X-Saigon-Fallback-Reason"] == "user_jason: missing"
    infer = requests.post(f"{server.url}/api/saigon/infer", json={"user_id": "jason", "input_text": "hi",
                                                                  "max_length": 1}, timeout=60).json()  # fmt: skip
    assert (infer["adapter_used"], infer["adapter_scope"]) == ("domain_cooking", "domain")
    assert infer["fallback_reason"] == "user_jason: missing"
    assert requests.put(url, json={"domain": None}, headers=ADMIN, timeout=10).json()["domain"] is None
    assert requests.put(url, json={"domain": "../x"}, headers=ADMIN, timeout=10).status_code == 400
    assert requests.put(url, json={"domain": "cooking\n"}, headers=ADMIN, timeout=10).status_code in (400, 422)
    assert requests.get(url, headers=ADMIN, timeout=10).json() == {"user_id": "jason", "domain": None}


def test_chat_with_mesh_context_gets_the_users_fact_delimited(server: LiveServer) -> None:
    requests.put(f"{server.url}/api/saigon/mesh/jason", json=GRAPH, timeout=10).raise_for_status()
    client = openai_client(server)
    messages = [{"role": "user", "content": QUESTION}]
    plain = client.chat.completions.with_raw_response.create(
        model="user_jason",
        messages=messages,
        max_tokens=1,
        temperature=0,  # type: ignore[arg-type]
    )
    meshed = client.chat.completions.with_raw_response.create(
        model="user_jason", messages=messages, max_tokens=1, temperature=0,  # type: ignore[arg-type]
        extra_body={"mesh_context": True},
    )  # fmt: skip
    assert plain.headers["X-Saigon-Mesh-Context"] == "false" and meshed.headers["X-Saigon-Mesh-Context"] == "true"
    plain_usage, meshed_usage = plain.parse().usage, meshed.parse().usage
    assert plain_usage is not None and meshed_usage is not None
    assert meshed_usage.prompt_tokens > plain_usage.prompt_tokens + 10
    entry = audit_entry(server, meshed.parse().id)
    prompt = entry["prompt"]
    assert prompt.index(CONTEXT_OPEN) < prompt.index(FACT) < prompt.index(CONTEXT_CLOSE) < prompt.rindex(QUESTION)
    assert "boat" not in prompt  # the same retrieval as /api/saigon/infer: only what is relevant
    assert entry["mesh_context_used"] is True
    # The completions route too (the block goes in front of the raw prompt).
    completion = client.completions.with_raw_response.create(
        model="user_jason", prompt=QUESTION, max_tokens=1, extra_body={"mesh_context": True}
    )
    assert FACT in audit_entry(server, completion.parse().id)["prompt"]


def test_asking_for_mesh_context_without_a_user_is_a_400_naming_it(server: LiveServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(server).completions.create(
            model=server.engine.model_id, prompt="x", max_tokens=1, extra_body={"mesh_context": True}
        )
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "mesh_context"


def test_conflicting_or_malformed_user_ids_are_refused(server: LiveServer) -> None:
    base = server.engine.model_id
    cases = [
        ({"X-Saigon-User": "bob"}, {"user": "alice"}, {400}, "user"),
        ({"X-Saigon-User": "bob"}, {"model": "user_alice"}, {400}, "model"),
        ({"X-Saigon-User": "../x"}, {}, {400}, "X-Saigon-User"),
        ({"X-Saigon-User": "al ice"}, {}, {400}, "X-Saigon-User"),
    ]
    for headers, body, statuses, param in cases:
        payload = {"model": base, "prompt": "x", "max_tokens": 1, **body}
        answer = requests.post(f"{server.url}/v1/completions", json=payload, headers=headers, timeout=30)
        assert answer.status_code in statuses and answer.json()["error"]["param"] == param, (headers, body)
    # A user id is a full match: "alice\n" is not alice (OpenAI's `user` takes it as an opaque end-user
    # tag that names nobody; the original API, whose user_id must be an id, refuses it).
    tagged = requests.post(f"{server.url}/v1/completions", json={"model": "user_alice", "prompt": "x", "max_tokens": 1,
                                                                 "user": "alice\n"}, timeout=30)  # fmt: skip
    assert tagged.status_code == 200
    refused = requests.post(
        f"{server.url}/api/saigon/infer", json={"user_id": "alice\n", "input_text": "x"}, timeout=30
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "user_id"


def test_the_audit_record_of_an_openai_request_has_the_original_fields(server: LiveServer) -> None:
    completion = openai_client(server).chat.completions.create(
        model="user_alice",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        max_tokens=2,
        temperature=0.5,
    )
    entry = audit_entry(server, completion.id)
    assert entry["adapter_used"].startswith("user_") and entry["adapter_used"] != "user_alice"  # hashed
    assert entry["adapter_active"] == "v1" and entry["device"] == "cpu" and entry["latency_ms"] > 0
    assert entry["mesh_context_used"] is False and entry["timestamp"].endswith("Z")
    assert entry["metadata"] == {"max_length": 2, "temperature": 0.5, "system_prompt": "be brief"}
    assert entry["input"] == "hello there" and entry["output"] == completion.choices[0].message.content


def test_status_shows_no_other_users_data_to_an_anonymous_caller(server: LiveServer) -> None:
    requests.post(f"{server.url}/api/saigon/infer", json={"user_id": "alice", "input_text": "hi", "max_length": 1},
                  timeout=60).raise_for_status()  # fmt: skip
    anonymous = requests.get(f"{server.url}/api/saigon/status", timeout=10).json()
    assert anonymous["current_user"] is None and anonymous["current_adapter"] is None
    assert all(not a["name"].startswith("user_") for a in anonymous["resident_adapters"])
    admin = requests.get(f"{server.url}/api/saigon/status", headers=ADMIN, timeout=10).json()
    assert admin["current_user"] == "alice" and admin["current_adapter"] == "user_alice"


# ---------------------------------------------------------------- two replicas, one PostgreSQL


def test_two_replicas_share_meshes_and_domains_through_postgresql(
    tiny_llama_dir: Path, adapters: Path, postgres_dsn: str
) -> None:
    config = make_config(tiny_llama_dir, adapters_dir=adapters, user_store="postgres", user_store_dsn=postgres_dsn)
    with ExitStack() as stack:
        a, b = (stack.enter_context(live_server(config)) for _ in range(2))
        requests.put(f"{a.url}/api/saigon/mesh/jason", json=GRAPH, timeout=10).raise_for_status()
        assert requests.get(f"{b.url}/api/saigon/mesh/jason", timeout=10).json()["nodes"][0]["text"] == FACT
        requests.put(f"{a.url}/admin/users/jason/domain", json={"domain": "cooking"}, headers=ADMIN,
                     timeout=10).raise_for_status()  # fmt: skip
        answer = requests.post(
            f"{b.url}/v1/chat/completions",
            json={"model": "user_jason", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 1,
                  "mesh_context": True},
            timeout=60,
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Saigon-Adapter"] == "domain_cooking"
        assert answer.headers["X-Saigon-Mesh-Context"] == "true"
