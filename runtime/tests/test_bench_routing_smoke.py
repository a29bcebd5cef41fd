"""The routing benchmark runs end to end through a real HAProxy (a smoke run, not a timing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from saigon_runtime.bench.routing import ModeResult, main, median_result


def test_rounds_combine_into_medians_and_sums() -> None:
    def result(rps: float, failed: int, spread: int) -> ModeResult:
        return ModeResult(mode="affinity", requests=10, failed=failed, wall_s=1.0, requests_per_s=rps,
                          tokens_per_s=rps * 4, latency_p50_ms=rps, latency_p99_ms=rps * 2, hits=9.0, misses=1.0,
                          hit_rate=0.9, max_replicas_per_user=spread, mean_replicas_per_user=1.0,
                          errors=[f"e{failed}"] if failed else [])  # fmt: skip

    combined = median_result([result(1.0, 0, 1), result(5.0, 2, 2), result(3.0, 0, 1)])
    assert combined.requests_per_s == 3.0 and combined.latency_p99_ms == 6.0
    assert combined.requests == 30 and combined.failed == 2 and combined.errors == ["e2"]
    assert combined.max_replicas_per_user == 2


@pytest.mark.slow
def test_the_routing_benchmark_compares_affinity_with_round_robin(tmp_path: Path) -> None:
    out, png = tmp_path / "routing.json", tmp_path / "routing.png"
    args = ["--quick", "--runtimes", "2", "--users", "8", "--active", "4", "--requests-per-user", "3", "--rounds", "1",
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
