"""Opt-in gauges for the Gateway API Inference Extension (vLLM names) and adapter residency:
scraped from a live server under load, checked by promtool, and absent unless asked for."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families
from saigon_runtime.redact import shown
from saigon_runtime.testing.tiny import install_adapter
from server_support import live_server, make_config

GIE_NAMES = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
             "vllm:gpu_cache_usage_perc", "vllm:lora_requests_info", "saigon_adapter_residency")  # fmt: skip


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_gie_gauges_name_running_waiting_and_resident_adapters(
    tiny_llama_dir: Path, adapter_factory, tmp_path: Path
) -> None:
    adapters = tmp_path / "adapters"
    for i in range(3):
        install_adapter(adapters, f"user_g{i}", "v1", adapter_factory(tiny_llama_dir, seed=40 + i))
    config = make_config(tiny_llama_dir, adapters_dir=adapters, max_loras=2, max_batch_size=4, gie_metrics=True,
                         max_new_tokens=4096, watch_interval_s=0, slot_wait_timeout_s=300)  # fmt: skip
    with live_server(config) as live:
        # Two adapters hold both device slots with long generations; the third has to wait.
        def generate(name: str) -> None:
            body = {"model": name, "prompt": "the cat", "max_tokens": 300, "ignore_eos": True, "temperature": 0}
            assert requests.post(f"{live.url}/v1/completions", json=body, timeout=300).status_code == 200

        first = [threading.Thread(target=generate, args=(f"user_g{i}",)) for i in (0, 1)]
        for t in first:
            t.start()
        deadline = time.monotonic() + 60
        while live.engine.stats().running < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        third = threading.Thread(target=generate, args=("user_g2",))
        third.start()
        seen: dict[str, list[tuple[dict[str, str], float]]] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = requests.get(f"{live.url}/metrics", timeout=10).text
            seen = samples(text)
            (info, _), *_ = seen["vllm:lora_requests_info"]
            if info["waiting_lora_adapters"] == shown("user_g2"):
                break
            time.sleep(0.02)
        promtool = shutil.which("promtool")
        assert promtool, "promtool is missing: run scripts/system-deps.sh"
        checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        # The exposition parses; the only lint is about vLLM's colons, which the picker expects.
        problems = [line for line in (checked.stdout + checked.stderr).splitlines() if line.strip()]
        assert checked.returncode in (0, 3), problems
        assert problems and all(
            p.startswith("vllm:") and p.endswith("metric names should not contain ':'") for p in problems
        ), problems
        (info, stamp), *_ = seen["vllm:lora_requests_info"]
        # User ids never become label values: a user's adapter shows as a keyed digest.
        assert info["max_lora"] == "2" and info["waiting_lora_adapters"] == shown("user_g2")
        assert sorted(info["running_lora_adapters"].split(",")) == sorted([shown("user_g0"), shown("user_g1")])
        assert not re.search(r"user_g\d", text), "a raw user adapter name reached the metrics"
        assert abs(stamp - time.time()) < 60
        model = {"model_name": live.engine.model_id}
        assert seen["vllm:num_requests_running"] == [(model, 2.0)]
        assert seen["vllm:num_requests_waiting"][0][1] >= 1
        assert seen["vllm:kv_cache_usage_perc"] == [(model, 0.5)]  # 2 of 4 batch rows
        assert seen["vllm:gpu_cache_usage_perc"] == seen["vllm:kv_cache_usage_perc"]
        for t in (*first, third):
            t.join(300)
        idle = samples(requests.get(f"{live.url}/metrics", timeout=10).text)
        assert idle["vllm:num_requests_running"] == [(model, 0.0)]
        (info, _), *_ = idle["vllm:lora_requests_info"]
        assert info["running_lora_adapters"] == "" and info["waiting_lora_adapters"] == ""
        # Residency says what is on the device even when nothing runs.
        resident = {labels["adapter"] for labels, value in idle["saigon_adapter_residency"] if value == 1}
        assert len(resident) == 2 and shown("user_g2") in resident


def test_gie_gauges_are_off_by_default(tiny_llama_dir: Path) -> None:
    with live_server(make_config(tiny_llama_dir)) as live:
        text = requests.get(f"{live.url}/metrics", timeout=10).text
    for name in GIE_NAMES:
        assert name not in text
