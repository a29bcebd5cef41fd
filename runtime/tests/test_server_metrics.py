"""/metrics: promtool finds nothing, labels stay bounded (never an id), and the figures move."""

from __future__ import annotations

import gc
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from saigon_runtime.testing.tiny import install_adapter, write_domains
from server_support import LiveServer, live_server, make_config

ALLOWED_LABELS = {"route", "method", "code", "scope", "finish_reason", "reason", "tier", "generation", "le"}
USERS = ("alice", "bob", "carol", "dave")  # dave's adapter is corrupt: refused once, then the cascade serves


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, adapter_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    adapters = tmp_path_factory.mktemp("metrics") / "adapters"
    install_adapter(adapters, "user_alice", "v1", adapter_factory(tiny_llama_dir, seed=1))
    install_adapter(adapters, "domain_cooking", "v1", adapter_factory(tiny_llama_dir, seed=2))
    install_adapter(adapters, "global", "v1", adapter_factory(tiny_llama_dir, seed=3))
    install_adapter(adapters, "user_dave", "v1", adapter_factory(tiny_llama_dir, seed=4))
    (adapters / "user_dave" / "v1" / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    write_domains(adapters, {"bob": "cooking"})
    with live_server(make_config(tiny_llama_dir, adapters_dir=adapters)) as live:
        for user in (*USERS, "dave"):  # a second request for dave finds the refusal remembered
            body = {"user_id": user, "input_text": "the soup", "max_length": 3}
            assert requests.post(f"{live.url}/api/saigon/infer", json=body, timeout=60).json()["adapter_used"]
        body = {"model": live.engine.model_id, "prompt": "the soup", "max_tokens": 3, "stream": True}
        assert requests.post(f"{live.url}/v1/completions", json=body, timeout=60).status_code == 200
        yield live


def scrape(server: LiveServer) -> str:
    response = requests.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.text


def test_promtool_finds_nothing(server: LiveServer) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: run scripts/system-deps.sh (Debian package `prometheus`)")
    checked = subprocess.run([promtool, "check", "metrics"], input=scrape(server), capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""


def test_labels_are_bounded_and_never_name_a_user_or_adapter(server: LiveServer) -> None:
    text = scrape(server)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, (sample.name, sample.labels)
            if "scope" in sample.labels:
                assert sample.labels["scope"] in {"user", "domain", "global", "named", "base"}
    for word in (*USERS, "cooking", "user_", "domain_"):
        assert word not in text


def test_the_figures_follow_the_traffic(server: LiveServer) -> None:
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(scrape(server)):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def value(name: str, **labels: str) -> float:
        return values[(name, tuple(sorted(labels.items())))]

    for scope in ("user", "domain", "global", "base"):
        assert value("saigon_time_to_first_token_seconds_count", scope=scope) >= 1
        assert value("saigon_request_latency_seconds_count", scope=scope) >= 1
        assert value("saigon_generation_tokens_total", scope=scope) >= 1
        assert value("saigon_prompt_tokens_total", scope=scope) >= 1
    assert value("saigon_engine_ready") == 1
    assert value("saigon_adapter_loads_total") >= 3
    assert value("saigon_adapter_cache_misses_total") >= 3
    assert value("saigon_adapter_load_seconds_total") > 0
    assert value("saigon_adapter_rejections_total") == 1
    assert value("saigon_adapters_resident", tier="device") >= 3
    assert value("saigon_adapter_slots", tier="device") == server.engine.adapters.pool.capacity
    assert value("saigon_batch_size_count") >= 1
    assert value("saigon_queue_depth") == 0
    assert value("saigon_http_requests_total", route="saigon_infer", method="POST", code="200") == len(USERS) + 1


def test_garbage_collections_are_timed_by_generation(server: LiveServer) -> None:
    gc.collect()  # the server runs in this process: a full collection it observes

    def count(text: str) -> float:
        samples = (s for f in text_string_to_metric_families(text) for s in f.samples)
        return next(
            s.value for s in samples if s.name == "saigon_gc_pause_seconds_count" and s.labels == {"generation": "2"}
        )

    before = count(scrape(server))
    gc.collect()
    assert count(scrape(server)) >= before + 1
    # An app in a test process does not freeze what it shares with the tests (only the CLI's does).
    assert "saigon_gc_frozen_objects 0.0" in scrape(server)
