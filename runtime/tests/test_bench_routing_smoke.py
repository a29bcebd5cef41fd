"""The routing benchmark runs end to end through a real HAProxy (a smoke run, not a timing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from saigon_runtime.bench.routing import main

pytestmark = pytest.mark.slow


def test_the_routing_benchmark_compares_affinity_with_round_robin(tmp_path: Path) -> None:
    out, png = tmp_path / "routing.json", tmp_path / "routing.png"
    args = ["--quick", "--runtimes", "2", "--users", "8", "--active", "4", "--requests-per-user", "3",
            "--max-loras", "2", "--max-tokens", "1", "--json", str(out), "--plot", str(png)]  # fmt: skip
    assert main(args) == 0
    report = json.loads(out.read_text())
    affinity, round_robin = report["modes"]
    assert (affinity["mode"], round_robin["mode"]) == ("affinity", "round-robin")
    for mode in (affinity, round_robin):
        assert mode["requests"] == 24 and mode["failed"] == 0
        assert mode["hits"] + mode["misses"] == 24
        assert mode["requests_per_s"] > 0 and mode["latency_p99_ms"] > 0
    # Each user's session stays on one replica with affinity (2 replicas and 8 users: no spill
    # worth a bound); round-robin spreads it.
    assert affinity["max_replicas_per_user"] <= 2 and round_robin["mean_replicas_per_user"] > 1
    assert set(report["ratios"]) == {"throughput affinity / round-robin", "p99 latency affinity / round-robin"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
