"""Lifecycle: liveness and readiness, loading in the background, and a graceful SIGTERM that
keeps listening (readiness 503, new work refused) while a stream in flight finishes, then exits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from saigon_runtime.config import RuntimeConfig
from saigon_runtime.testing.tiny import install_adapter
from server_support import ADMIN_TOKEN, live_server, make_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, status: int, timeout: float = 120.0) -> requests.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = requests.get(url, timeout=5)
            if response.status_code == status:
                return response
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer {status} within {timeout}s")
        time.sleep(0.2)


def test_readiness_waits_for_the_required_adapters(tiny_llama_dir: Path, adapter_factory, tmp_path: Path) -> None:
    adapters = tmp_path / "adapters"
    install_adapter(adapters, "global", "v1", adapter_factory(tiny_llama_dir, seed=3))
    config = make_config(tiny_llama_dir, adapters_dir=adapters, required_adapters=["global", "domain_law"])
    with live_server(config) as live:
        assert requests.get(f"{live.url}/healthz", timeout=10).json() == {"status": "ok", "detail": None}
        not_ready = requests.get(f"{live.url}/readyz", timeout=10)
        assert not_ready.status_code == 503
        assert not_ready.json()["missing_adapters"] == ["domain_law"]
        assert not_ready.json()["base_model_loaded"] is True
        # The agent writes the version, then tells the runtime to load it.
        install_adapter(adapters, "domain_law", "v1", adapter_factory(tiny_llama_dir, seed=4))
        loaded = requests.post(
            f"{live.url}/admin/adapters/load",
            json={"name": "domain_law", "version": "v1", "path": str(adapters / "domain_law" / "v1")},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        )
        assert loaded.status_code == 200, loaded.text
        assert requests.get(f"{live.url}/readyz", timeout=10).json()["ready"] is True


def test_a_base_model_that_cannot_load_fails_liveness(tmp_path: Path) -> None:
    config = RuntimeConfig(base_model_dir=tmp_path / "missing", device="cpu", admin_token=ADMIN_TOKEN)
    with live_server(config, background_load=True) as live:
        health = wait_for(f"{live.url}/healthz", 503)
        assert health.json()["status"] == "failed"
        assert requests.get(f"{live.url}/readyz", timeout=10).json()["base_model_loaded"] is False
        refused = requests.post(f"{live.url}/v1/completions", json={"model": "m", "prompt": "x"}, timeout=10)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "not_ready"


@pytest.mark.slow
def test_sigterm_drains_with_the_listener_open_then_exits(tiny_llama_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAIGON_")}
    env.update({"SAIGON_MAX_NEW_TOKENS": "512", "SAIGON_LOG_DIR": str(tmp_path / "logs")})
    command = [sys.executable, "-m", "saigon_runtime.cli", "serve", "--port", str(port),
               "--base-model", str(tiny_llama_dir), "--device", "cpu", "--drain-timeout", "60"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(f"{url}/readyz", 200)
        # The served process froze what its start-up left (torch, transformers, the model): full
        # garbage collections no longer walk it while requests wait.
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        frozen = next(line for line in metrics.splitlines() if line.startswith("saigon_gc_frozen_objects "))
        assert float(frozen.split()[1]) > 100_000, frozen
        body = {
            "model": tiny_llama_dir.name,
            "prompt": "the cat",
            "max_tokens": 400,  # long enough to still run while the drain is checked
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with requests.post(f"{url}/v1/completions", json=body, stream=True, timeout=120) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines(decode_unicode=True)
            first = next(line for line in lines if line)
            assert first.startswith("data: {")
            server.send_signal(signal.SIGTERM)
            # Still listening while the stream runs: readiness fails so the router and the
            # endpoints stop sending, liveness holds, and new work is refused with a status.
            ready = wait_for(f"{url}/readyz", 503, timeout=30)
            assert ready.json()["draining"] is True and ready.json()["ready"] is False
            assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
            plain = {"model": body["model"], "prompt": "the cat", "max_tokens": 2}
            refused = requests.post(f"{url}/v1/completions", json=plain, timeout=10)
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
            assert server.poll() is None, "the server must not exit while a stream is in flight"
            events = [first] + [line for line in lines if line]
        assert events[-1] == "data: [DONE]"
        chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"
        assert chunks[-1]["usage"]["completion_tokens"] == 400
        assert server.wait(60) == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/healthz", timeout=5)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        output = server.stdout.read() if server.stdout else ""
    assert "draining" in output
    assert "Traceback" not in output
    # The finished stream was audited once the engine had drained.
    audit = list((tmp_path / "logs").glob("inference_*.jsonl"))
    assert len(audit) == 1 and audit[0].read_text().count("\n") == 1


# A device string torch accepts but this Linux build cannot load onto: the loader fails exactly
# where a CUDA out-of-memory or driver error would, after the accelerator was chosen.
FAILING_DEVICE = "mps"


def test_an_accelerator_failure_at_load_keeps_the_pod_not_ready_and_says_why(tiny_llama_dir: Path) -> None:
    config = RuntimeConfig(base_model_dir=tiny_llama_dir, device=FAILING_DEVICE, admin_token=ADMIN_TOKEN)
    with live_server(config, background_load=True) as live:
        wait_for(f"{live.url}/healthz", 503)
        ready = requests.get(f"{live.url}/readyz", timeout=10)
        assert ready.status_code == 503
        body = ready.json()
        assert body["ready"] is False and body["base_model_loaded"] is False
        assert f"on {FAILING_DEVICE} failed" in body["load_error"] and "SAIGON_CPU_FALLBACK" in body["load_error"]
        status = requests.get(f"{live.url}/api/saigon/status", timeout=10).json()
        assert status["engine_initialized"] is False and status["load_error"] == body["load_error"]
        refused = requests.post(f"{live.url}/v1/completions", json={"model": "m", "prompt": "x"}, timeout=10)
        assert refused.status_code == 503


def test_the_cpu_fallback_happens_only_when_configured_and_is_reported(tiny_llama_dir: Path) -> None:
    config = RuntimeConfig(
        base_model_dir=tiny_llama_dir, device=FAILING_DEVICE, cpu_fallback=True, admin_token=ADMIN_TOKEN
    )
    with live_server(config, background_load=True) as live:
        ready = wait_for(f"{live.url}/readyz", 200).json()
        assert f"on {FAILING_DEVICE} failed" in ready["device_fallback"]
        status = requests.get(f"{live.url}/api/saigon/status", timeout=10).json()
        assert status["device"] == "cpu" and status["device_fallback"] == ready["device_fallback"]
        answer = requests.post(
            f"{live.url}/v1/completions", json={"model": "base", "prompt": "the cat", "max_tokens": 2}, timeout=30
        )
        assert answer.status_code == 200, answer.text
