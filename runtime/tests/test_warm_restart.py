"""A warm restart of a real `saigon-runtime serve` process: SIGTERM records the hot set; the next
process preloads it before it reports Ready, so the first requests of the hot users are adapter
cache hits (read from /metrics). The record goes where SAIGON_HOTSET_FILE says, as in a pod
(whose adapters volume belongs to the agent)."""

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
from prometheus_client.parser import text_string_to_metric_families
from saigon_runtime.adapters.hotset import HOTSET_FILE
from saigon_runtime.testing.tiny import install_adapter

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(base: Path, adapters: Path, port: int, hotset: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAIGON_")}
    env["SAIGON_HOTSET_FILE"] = str(hotset)
    command = [sys.executable, "-m", "saigon_runtime.cli", "serve", "--port", str(port), "--base-model", str(base),
               "--adapters-dir", str(adapters), "--device", "cpu", "--cache-size", "4"]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_ready(url: str, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stdout.read() if server.stdout else ""
        try:
            if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError("the runtime did not become ready")


def cache(url: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            for key in ("hits", "misses", "loads"):
                if sample.name in (f"saigon_adapter_cache_{key}_total", f"saigon_adapter_{key}_total"):
                    out[key] = sample.value
    return out


def complete(url: str, user: int) -> None:
    body = {"model": f"user_r{user}", "prompt": "the cat", "max_tokens": 2, "temperature": 0}
    assert requests.post(f"{url}/v1/completions", json=body, timeout=60).status_code == 200


def stop(server: subprocess.Popen[str]) -> str:
    server.send_signal(signal.SIGTERM)
    assert server.wait(60) == 0
    return server.stdout.read() if server.stdout else ""


def test_after_a_restart_the_first_requests_of_the_hot_users_are_hits(
    tiny_llama_dir: Path, adapter_factory, tmp_path: Path
) -> None:
    adapters = tmp_path / "adapters"
    for user in range(6):
        install_adapter(adapters, f"user_r{user}", "v1", adapter_factory(tiny_llama_dir, seed=70 + user))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    hotset = tmp_path / "pod-tmp" / "saigon-hotset.json"
    server = serve(tiny_llama_dir, adapters, port, hotset)
    try:
        wait_ready(url, server)
        for user in (0, 1, 2, 3, 4, 5, 2, 3, 4, 5):  # four slots: users 2..5 are hot at the end
            complete(url, user)
        output = stop(server)
    finally:
        if server.poll() is None:
            server.kill()
    assert "Traceback" not in output
    assert not (adapters / HOTSET_FILE).exists()
    recorded = json.loads(hotset.read_text())["adapters"]
    assert sorted(e["name"] for e in recorded) == [f"user_r{u}" for u in (2, 3, 4, 5)]
    assert {e["version"] for e in recorded} == {"v1"}

    server = serve(tiny_llama_dir, adapters, port, hotset)
    try:
        wait_ready(url, server)
        # Loaded before Ready: the preload is all the loading this process has done.
        assert cache(url) == {"hits": 0.0, "misses": 4.0, "loads": 4.0}
        for user in (2, 3, 4, 5):
            complete(url, user)
        assert cache(url) == {"hits": 4.0, "misses": 4.0, "loads": 4.0}
        complete(url, 0)  # a cold user still loads
        assert cache(url)["misses"] == 5.0
        stop(server)
    finally:
        if server.poll() is None:
            server.kill()
