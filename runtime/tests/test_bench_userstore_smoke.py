"""The user store benchmark runs end to end, small, against the test PostgreSQL (no figures asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from saigon_runtime.bench.userstore import main


def test_the_benchmark_runs_and_reports_every_figure(postgres_dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    assert main(["--users", "40", "--nodes", "20", "--requests", "10", "--writes", "5", "--dsn", postgres_dsn,
                 "--json", str(out)]) == 0  # fmt: skip
    figures = json.loads(out.read_text())
    assert (figures["users"], figures["requests"], figures["writes"]) == (40, 10, 5)
    for key in ("cold_p50_ms", "cold_p99_ms", "warm_p50_ms", "warm_p99_ms", "visible_p50_ms", "visible_p99_ms"):
        assert figures[key] > 0, key
