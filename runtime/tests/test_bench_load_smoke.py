"""The load benchmark runs end to end (a smoke run, not a timing): no failures, swap answered."""

from __future__ import annotations

import json
from pathlib import Path

from saigon_runtime.bench.load import main


def test_the_load_benchmark_runs_without_failures(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    args = ["--quick", "--clients", "4", "--requests", "12", "--adapters", "2", "--max-tokens", "4", "--json", str(out)]
    assert main(args) == 0
    summary = json.loads(out.read_text())
    assert summary["requests"] == 12 and summary["failed"] == 0
    assert summary["tokens"] == 12 * 4
    assert summary["swap"]["status"] == 200
    assert summary["server"]["mean_batch_size"] >= 1
