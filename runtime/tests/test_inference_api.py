"""The original Python API, `SaigonInference`, used directly without any server."""

from __future__ import annotations

import json

import pytest
from saigon_runtime.errors import InvalidRequest
from saigon_runtime.inference import SaigonInference
from saigon_runtime.testing.tiny import write_domains


@pytest.fixture
def saigon(tiny_llama_dir, adapter_factory, adapters_dir, install, tmp_path):
    install(adapters_dir, "user_alice", "v1", adapter_factory(tiny_llama_dir, seed=70))
    install(adapters_dir, "domain_cooking", "v1", adapter_factory(tiny_llama_dir, seed=71))
    install(adapters_dir, "global", "v1", adapter_factory(tiny_llama_dir, seed=72))
    write_domains(adapters_dir, {"bob": "cooking"})
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    graph = {
        "nodes": [
            {"id": "n1", "label": "soup", "text": "alice likes tomato soup", "weight": 1.0},
            {"id": "n2", "label": "bread", "text": "she bakes bread on sunday", "weight": 0.5},
        ],
        "edges": [{"source": "n1", "target": "n2", "relation": "served with"}],
    }
    (mesh / "user_alice_mesh.json").write_text(json.dumps(graph))
    engine = SaigonInference(
        base_model_dir=tiny_llama_dir, adapters_dir=adapters_dir, mesh_dir=mesh, device="cpu", log_dir=tmp_path / "logs"
    )
    yield engine
    engine.close()


def test_run_inference_answers_with_the_cascade_and_the_contract_fields(saigon):
    alice = saigon.run_inference("alice", "soup please", temperature=0, max_length=6)
    for key in ("output", "adapter_used", "adapter_active", "mesh_context_used", "device", "latency_ms"):
        assert key in alice
    assert (alice["adapter_used"], alice["adapter_active"], alice["mesh_context_used"]) == ("user_alice", "v1", True)
    assert alice["device"] == "cpu" and alice["completion_tokens"] <= 6
    bob = saigon.run_inference("bob", "soup please", temperature=0, max_length=6)
    assert bob["adapter_used"] == "domain_cooking" and "user_bob: missing" in bob["fallback_reason"]
    carol = saigon.run_inference("carol", "soup please", temperature=0, max_length=6)
    assert carol["adapter_used"] == "global" and carol["mesh_context_used"] is False
    explicit = saigon.run_inference("carol", "hi", temperature=0, max_length=4, adapter="user_alice")
    assert explicit["adapter_used"] == "user_alice"


def test_without_context_or_system_prompt_the_model_sees_the_input_unchanged(saigon):
    text = "the cat and the dog"
    out = saigon.run_inference("carol", text, temperature=0, max_length=5, use_mesh_context=False)
    assert out["prompt_tokens"] == len(saigon.engine.tokenizer(text)["input_ids"])
    greedy = saigon.run_inference("carol", text, temperature=0, max_length=5, use_mesh_context=False)
    assert greedy["output"] == out["output"]  # temperature 0 is greedy: the same answer twice


def test_run_batch_serves_mixed_adapters_together_in_order(saigon):
    requests = [
        {"user_id": "alice", "user_input": "soup", "temperature": 0, "max_length": 5},
        {"user_id": "bob", "user_input": "soup", "temperature": 0, "max_length": 5},
        {"user_id": "carol", "user_input": "soup", "temperature": 0, "max_length": 5},
    ]
    results = saigon.run_batch(requests)
    assert [r["adapter_used"] for r in results] == ["user_alice", "domain_cooking", "global"]
    singles = [saigon.run_inference(**r) for r in requests]
    assert [r["output"] for r in results] == [s["output"] for s in singles]
    with pytest.raises(InvalidRequest, match="unknown keys"):
        saigon.run_batch([{"user_input": "x", "bogus": 1}])


def test_load_hot_swap_and_status(saigon, tiny_llama_dir, adapter_factory):
    loaded = saigon.load_model_with_adapter("alice")
    assert loaded["adapter_used"] == "user_alice"
    before = saigon.run_inference("alice", "soup", temperature=0, max_length=6, use_mesh_context=False)
    swap = saigon.hot_swap_adapter(adapter_factory(tiny_llama_dir, seed=73), backup_current=False)
    assert swap["success"] and swap["previous_version"] == "v1" and swap["version"] != "v1"
    after = saigon.run_inference("alice", "soup", temperature=0, max_length=6, use_mesh_context=False)
    assert after["adapter_active"] == swap["version"] and after["output"] != before["output"]
    assert not (saigon.config.adapters_dir / "user_alice" / "v1").exists()  # no backup kept
    status = saigon.get_status()
    for key in ("engine_initialized", "current_user", "current_adapter", "device", "cache_enabled", "cache_size",
                "cache_max_size"):  # fmt: skip
        assert key in status
    assert status["current_user"] == "alice" and status["current_adapter"] == "user_alice"
    assert status["cache_size"] >= 1


def test_environment_variables_configure_the_same_things(tiny_llama_dir, adapters_dir, monkeypatch):
    monkeypatch.setenv("SAIGON_BASE_MODEL", str(tiny_llama_dir))
    monkeypatch.setenv("SAIGON_ADAPTERS_DIR", str(adapters_dir))
    monkeypatch.setenv("SAIGON_DEVICE", "cpu")
    monkeypatch.setenv("SAIGON_CACHE_SIZE", "3")
    with SaigonInference() as engine:
        status = engine.get_status()
        assert status["cache_max_size"] == 3 and status["device"] == "cpu"
        assert engine.run_inference(None, "hello", temperature=0, max_length=3)["adapter_used"] is None
