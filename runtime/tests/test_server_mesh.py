"""Mesh context over HTTP: GET/PUT one user's graph (untrusted JSON, validated and size-capped),
files re-read when they change, and the context delimited in the prompt."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from saigon_runtime.mesh.sanitize import CONTEXT_CLOSE, CONTEXT_OPEN
from server_support import LiveServer, live_server, make_config

GRAPH: dict[str, Any] = {
    "nodes": [
        {"id": "soup", "label": "soup recipes", "text": "a green soup with bread", "weight": 2.0},
        {"id": "bread", "label": "bread", "text": "bake bread in the oven"},
        {"id": "ships", "label": "ships", "text": "a boat on the river"},
    ],
    "edges": [{"source": "soup", "target": "bread", "relation": "served_with"}],
}


@pytest.fixture(scope="module")
def mesh_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mesh") / "mesh"


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mesh-logs") / "logs"


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, mesh_dir: Path, log_dir: Path) -> Iterator[LiveServer]:
    config = make_config(tiny_llama_dir, mesh_dir=mesh_dir, log_dir=log_dir, log_prompts=True, max_body_bytes=1 << 21)
    with live_server(config) as live:
        yield live


def infer(server: LiveServer, **body: Any) -> dict[str, Any]:
    payload = {"user_id": "alice", "max_length": 2, "temperature": 0, **body}
    response = requests.post(f"{server.url}/api/saigon/infer", json=payload, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def audited_prompt(log_dir: Path, request_id: str, server: LiveServer) -> str:
    assert server.state.audit is not None
    server.state.audit.flush(10)
    for path in log_dir.glob("inference_*.jsonl"):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry["request_id"] == request_id:
                return str(entry["prompt"])
    raise AssertionError("request not audited")


def test_put_then_get_a_graph(server: LiveServer) -> None:
    url = f"{server.url}/api/saigon/mesh/alice"
    assert requests.get(url, timeout=10).status_code == 404
    stored = requests.put(url, json=GRAPH, timeout=10)
    assert stored.status_code == 200 and stored.json() == {"user_id": "alice", "nodes": 3, "edges": 1}
    fetched = requests.get(url, timeout=10).json()
    assert [n["id"] for n in fetched["nodes"]] == ["soup", "bread", "ships"]
    assert fetched["nodes"][1]["weight"] == 1.0  # defaults filled in


def test_the_context_reaches_the_prompt_delimited(server: LiveServer, log_dir: Path) -> None:
    requests.put(f"{server.url}/api/saigon/mesh/alice", json=GRAPH, timeout=10).raise_for_status()
    answer = infer(server, input_text="how do I make soup")
    assert answer["mesh_context_used"] is True
    prompt = audited_prompt(log_dir, answer["request_id"], server)
    opened, closed = prompt.index(CONTEXT_OPEN), prompt.index(CONTEXT_CLOSE)
    assert opened < prompt.index("green soup") < closed
    assert opened < prompt.index("bake bread") < closed  # pulled in as the soup node's neighbour
    assert "boat" not in prompt  # irrelevant to the query
    assert prompt.index("how do I make soup") > closed
    without = infer(server, input_text="how do I make soup", use_mesh_context=False)
    assert without["mesh_context_used"] is False
    assert audited_prompt(log_dir, without["request_id"], server) == "how do I make soup"


def test_bad_graphs_are_refused_precisely(server: LiveServer) -> None:
    url = f"{server.url}/api/saigon/mesh/alice"
    dangling = {"nodes": [{"id": "a", "label": "a"}], "edges": [{"source": "a", "target": "nowhere"}]}
    refused = requests.put(url, json=dangling, timeout=10)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_mesh" and "nowhere" in refused.json()["error"]["message"]
    assert requests.put(url, data=b"[1, 2]", timeout=10).status_code == 400
    huge = {"nodes": [{"id": str(i), "label": "x", "text": "y" * 8000} for i in range(140)], "edges": []}
    too_big = requests.put(url, json=huge, timeout=30)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "mesh_too_large"
    assert requests.get(f"{server.url}/api/saigon/mesh/..", timeout=10).status_code in (400, 404)
    assert requests.get(f"{server.url}/api/saigon/mesh/a..b", timeout=10).status_code == 400


def test_a_file_changed_on_disk_is_read_again(server: LiveServer, mesh_dir: Path) -> None:
    path = mesh_dir / "user_erin_mesh.json"
    mesh_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"nodes": [{"id": "a", "label": "first"}], "edges": []}))
    url = f"{server.url}/api/saigon/mesh/erin"
    assert requests.get(url, timeout=10).json()["nodes"][0]["label"] == "first"
    path.write_text(json.dumps({"nodes": [{"id": "a", "label": "second version"}], "edges": []}))
    assert requests.get(url, timeout=10).json()["nodes"][0]["label"] == "second version"
