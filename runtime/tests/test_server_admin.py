"""The admin API contract the agent sidecar relies on, hot-swaps under load, and the original
hot-swap endpoint."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from saigon_runtime.adapters.types import AdapterRef
from saigon_runtime.engine.types import GenerationRequest, SamplingParams
from saigon_runtime.testing.tiny import install_adapter
from server_support import ADMIN_TOKEN, LiveServer, live_server, make_config

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PROMPT = "the boat and the sea"
INFO_KEYS = {"name", "version", "active_version", "tier", "pinned", "loaded_at", "error"}


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("admin") / "adapters"


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, adapter_factory, adapters: Path) -> Iterator[LiveServer]:
    install_adapter(adapters, "user_alice", "v1", adapter_factory(tiny_llama_dir, seed=1))
    install_adapter(adapters, "global", "v1", adapter_factory(tiny_llama_dir, seed=3))
    with live_server(
        make_config(tiny_llama_dir, adapters_dir=adapters, staging_dir=adapters.parent / "staging")
    ) as live:
        yield live


def admin(server: LiveServer, action: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{server.url}/admin/adapters/{action}", json=body, headers=ADMIN, timeout=60)


def listed(server: LiveServer) -> dict[str, dict[str, Any]]:
    body = requests.get(f"{server.url}/admin/adapters", headers=ADMIN, timeout=10).json()
    assert set(body) == {"adapters"}
    for info in body["adapters"]:
        assert set(info) == INFO_KEYS
    return {info["name"]: info for info in body["adapters"]}


def greedy(server: LiveServer, adapter: AdapterRef | None, max_new_tokens: int) -> str:
    engine = server.engine
    sampling = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, ignore_eos=True)
    return engine.generate(GenerationRequest(engine.tokenizer.encode(PROMPT), adapter, sampling), timeout=60).text


def complete(server: LiveServer, model: str, max_tokens: int) -> str:
    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    response = requests.post(f"{server.url}/v1/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["text"])


def test_listing_follows_the_contract(server: LiveServer) -> None:
    infos = listed(server)
    assert set(infos) == {"user_alice", "global"}
    assert infos["user_alice"]["version"] == "v1" and infos["user_alice"]["active_version"] == "v1"
    assert infos["user_alice"]["tier"] in {"device", "host", "disk"} and infos["user_alice"]["error"] is None


def test_a_load_swaps_versions_while_a_stream_in_flight_finishes_on_the_old_one(
    server: LiveServer, adapters: Path, tiny_llama_dir: Path, adapter_factory
) -> None:
    engine = server.engine
    v1_text = greedy(server, AdapterRef("user_alice", "v1"), 24)
    body = {"model": "user_alice", "prompt": PROMPT, "max_tokens": 24, "temperature": 0, "stream": True}
    entered, gate = threading.Event(), threading.Event()
    with requests.post(f"{server.url}/v1/completions", json=body, stream=True, timeout=60) as stream:
        lines = (line for line in stream.iter_lines(decode_unicode=True) if line)
        events = [next(lines)]

        def hold(phase: str) -> None:
            entered.set()
            gate.wait(30)

        engine.before_forward = hold  # keep the stream mid-flight while the swap happens
        try:
            assert entered.wait(30)
            # The agent's part: write the version beside the others, then ask for it to be served.
            shutil.copytree(adapter_factory(tiny_llama_dir, seed=5), adapters / "user_alice" / "v2")
            path = str(adapters / "user_alice" / "v2")
            loaded = admin(server, "load", {"name": "user_alice", "version": "v2", "path": path})
            assert engine.stats().running == 1, "the stream must still be running during the swap"
        finally:
            engine.before_forward = None
            gate.set()
        events += list(lines)
    assert loaded.status_code == 200, loaded.text
    answer = loaded.json()
    assert set(answer) == {"name", "version", "loaded_at"}
    assert answer["name"] == "user_alice" and answer["version"] == "v2" and answer["loaded_at"] > 0
    assert events[-1] == "data: [DONE]"
    streamed = "".join(c["text"] for e in events[:-1] for c in json.loads(e[6:])["choices"])
    assert streamed == v1_text, "a running request keeps the version it started with"
    assert os.readlink(adapters / "user_alice" / "active") == "v2"
    assert listed(server)["user_alice"]["version"] == "v2"
    after = complete(server, "user_alice", 24)
    assert after == greedy(server, AdapterRef("user_alice", "v2"), 24)
    assert after != v1_text


def test_a_rejected_adapter_is_422_and_the_current_version_keeps_serving(server: LiveServer, adapters: Path) -> None:
    current = listed(server)["user_alice"]["version"]
    broken = adapters / "user_alice" / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"]}')
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors at all")
    refused = admin(server, "load", {"name": "user_alice", "version": "broken", "path": str(broken)})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "adapter_rejected"
    assert listed(server)["user_alice"]["version"] == current
    complete(server, "user_alice", 2)
    missing = admin(server, "load", {"name": "user_alice", "version": "v9"})
    assert missing.status_code == 404


def test_pin_and_unload(server: LiveServer) -> None:
    pinned = admin(server, "pin", {"name": "global", "pinned": True})
    assert pinned.status_code == 200 and pinned.json() == {"name": "global", "pinned": True}
    assert listed(server)["global"]["pinned"] is True
    assert admin(server, "pin", {"name": "global", "pinned": False}).json()["pinned"] is False

    served = requests.post(f"{server.url}/api/saigon/infer", json={"user_id": "carol", "input_text": "hi",
                                                                   "max_length": 2}, timeout=60)  # fmt: skip
    assert served.json()["adapter_used"] == "global"
    unloaded = admin(server, "unload", {"name": "global"})
    assert unloaded.status_code == 200 and unloaded.json() == {"name": "global", "version": None, "unloaded": True}
    assert "global" not in listed(server)
    models = {m["id"] for m in requests.get(f"{server.url}/v1/models", timeout=10).json()["data"]}
    assert "global" not in models
    served = requests.post(f"{server.url}/api/saigon/infer", json={"user_id": "carol", "input_text": "hi",
                                                                   "max_length": 2}, timeout=60)  # fmt: skip
    assert served.json()["adapter_used"] is None and served.json()["adapter_scope"] == "base"
    assert admin(server, "load", {"name": "global"}).status_code == 200
    assert admin(server, "unload", {"name": "domain_nothing"}).status_code == 404


def test_the_original_hot_swap_endpoint(server: LiveServer, tiny_llama_dir: Path, adapter_factory) -> None:
    staging = server.state.config.staging_dir
    assert staging is not None
    source = str(shutil.copytree(adapter_factory(tiny_llama_dir, seed=6), staging / "dave-next"))
    body = {"user_id": "dave", "new_adapter_path": source}
    assert requests.post(f"{server.url}/api/saigon/adapters/hot-swap", json=body, timeout=30).status_code == 401
    swapped = requests.post(f"{server.url}/api/saigon/adapters/hot-swap", json=body, headers=ADMIN, timeout=30)
    assert swapped.status_code == 200, swapped.text
    answer = swapped.json()
    assert answer["success"] is True and answer["adapter"] == "user_dave" and answer["previous_version"] is None
    served = requests.post(
        f"{server.url}/api/saigon/infer", json={"user_id": "dave", "input_text": "hi", "max_length": 2}, timeout=60
    )
    assert served.json()["adapter_used"] == "user_dave"
    assert served.json()["adapter_active"] == answer["version"]


def test_evaluation_answers_with_the_version_asked_for_current_or_not(
    server: LiveServer, adapters: Path, tiny_llama_dir: Path, adapter_factory
) -> None:
    install_adapter(adapters, "global", "eval-cand", adapter_factory(tiny_llama_dir, seed=41))
    current = listed(server)["global"]["version"]
    assert current != "eval-cand"
    body = {"name": "global", "version": "eval-cand", "prompts": [{"prompt": PROMPT, "max_tokens": 6}]}
    response = admin(server, "evaluate", body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["version"] == "eval-cand" and len(result["results"]) == 1
    engine = server.engine
    sampling = SamplingParams(temperature=0.0, max_new_tokens=6)
    expected = engine.generate(
        GenerationRequest(engine.tokenizer.encode(PROMPT), AdapterRef("global", "eval-cand"), sampling), timeout=60
    ).text
    assert result["results"][0]["output"] == expected and result["results"][0]["loss"] is None
    scored = admin(server, "evaluate", {**body, "prompts": [{"prompt": PROMPT, "max_tokens": 2, "completion": " red"}]})
    assert scored.status_code == 200, scored.text
    completion_ids = engine.tokenizer.encode(" red", add_special_tokens=False)
    loss = engine.score(engine.tokenizer.encode(PROMPT), completion_ids, AdapterRef("global", "eval-cand"))
    assert scored.json()["results"][0]["loss"] == pytest.approx(loss, abs=1e-5) and loss > 0
    assert listed(server)["global"]["version"] == current  # evaluating never makes a version current
    assert admin(server, "evaluate", {**body, "version": "nope"}).status_code == 404
    assert admin(server, "evaluate", {**body, "prompts": []}).status_code == 400
    denied = requests.post(f"{server.url}/admin/adapters/evaluate", json=body, timeout=10)
    assert denied.status_code in (401, 403)


def test_responses_name_their_version_and_the_version_figures_count_them(server: LiveServer) -> None:
    version = listed(server)["global"]["version"]

    def figures() -> dict[str, Any]:
        response = admin(server, "stats", {"name": "global"})
        assert response.status_code == 200, response.text
        return {v["version"]: v for v in response.json()["versions"]}

    before = figures().get(version, {"requests": 0, "errors": 0})
    body = {"model": "global", "prompt": PROMPT, "max_tokens": 2, "temperature": 0}
    plain = requests.post(f"{server.url}/v1/completions", json=body, timeout=60)
    assert plain.status_code == 200
    assert plain.headers["X-Saigon-Adapter"] == "global" and plain.headers["X-Saigon-Adapter-Version"] == version
    with requests.post(f"{server.url}/v1/completions", json={**body, "stream": True}, stream=True, timeout=60) as s:
        assert s.headers["X-Saigon-Adapter-Version"] == version
        assert "[DONE]" in s.text
    base = requests.post(f"{server.url}/v1/completions", json={**body, "model": server.engine.model_id}, timeout=60)
    assert "X-Saigon-Adapter-Version" not in base.headers
    after = figures()[version]
    assert after["requests"] - before["requests"] == 2 and after["errors"] == before["errors"]
    assert after["p99_ms"] is not None and after["p99_ms"] >= after["p50_ms"] > 0


def test_imports_come_only_from_the_adapters_or_the_staging_directory(
    server: LiveServer, adapters: Path, tiny_llama_dir: Path, adapter_factory, tmp_path: Path
) -> None:
    """Any absolute path used to be imported (and its files copied into the adapters directory)."""
    staging = server.state.config.staging_dir
    assert staging is not None
    outside = shutil.copytree(adapter_factory(tiny_llama_dir, seed=7), tmp_path / "outside")
    (staging / "sneaky").parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, staging / "sneaky")  # inside the staging root by name only
    for path in (str(outside), "/etc", str(staging / "sneaky"), str(staging / ".." / "outside"), str(adapters / "..")):
        swap = requests.post(f"{server.url}/api/saigon/adapters/hot-swap", headers=ADMIN, timeout=30,
                             json={"user_id": "erin", "new_adapter_path": path})  # fmt: skip
        load = admin(server, "load", {"name": "user_erin", "path": path})
        for response, field in ((swap, "new_adapter_path"), (load, "path")):
            assert response.status_code == 400, (path, response.text)
            assert response.json()["error"]["param"] == field
            assert response.json()["error"]["code"] == "path_not_allowed"
    assert not (adapters / "user_erin").exists()
    # A real staging directory works.
    staged = shutil.copytree(adapter_factory(tiny_llama_dir, seed=7), staging / "erin-v1")
    assert admin(server, "load", {"name": "user_erin", "path": str(staged)}).status_code == 200


def test_pins_stop_one_slot_short_of_max_loras(server: LiveServer, adapters: Path) -> None:
    """With every slot pinned, every other adapter got 429: pins are capped at max_loras - 1."""
    capacity = server.engine.adapters.pool.capacity
    names = [f"domain_pin{i}" for i in range(capacity)]
    for name in names:
        install_adapter(adapters, name, "v1", adapters / "global" / "v1")
    try:
        for name in names[:-1]:
            assert admin(server, "pin", {"name": name, "pinned": True}).status_code == 200, name
        refused = admin(server, "pin", {"name": names[-1], "pinned": True})
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "pin_limit" and f"at most {capacity - 1} adapters may be pinned" in error["message"]
        assert listed(server)[names[-1]]["pinned"] is False
        # Pinning a pinned adapter again is fine, and an unpinned adapter still gets a slot.
        assert admin(server, "pin", {"name": names[0], "pinned": True}).status_code == 200
        complete(server, names[-1], 2)
    finally:
        for name in names:
            admin(server, "pin", {"name": name, "pinned": False})
