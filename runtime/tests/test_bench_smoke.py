"""The engine benchmark runs end to end (a tiny shape); speed itself is never asserted in tests."""

from __future__ import annotations

import json

from saigon_runtime.bench.engine import main


def test_engine_benchmark_runs_and_reports_every_comparison(tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    report = main(["--quick", "--repeats", "1", "--requests", "4", "--new-tokens", "4", "--prompt-tokens", "8",
                   "--json", str(out), "--plot", str(png)])  # fmt: skip
    written = json.loads(out.read_text())
    rows = written["rows"]
    # The plot's caption and spread: the machine, and every round behind each median.
    assert "cores available" in written["notes"]["hardware"] and "torch" in written["notes"]["hardware"]
    assert {"ceiling", "peft_mixed", "saigon", "original", "sweep 64"} <= set(written["samples"])
    assert all(len(values) >= 1 for values in written["samples"].values())
    for key in (
        "tok/s base model alone, batched (ceiling)",
        "tok/s original design: PEFT set_adapter+generate, 1 by 1",
        "tok/s PEFT mixed batch generate(adapter_names=...)",
        "tok/s Saigon, mixed adapters",
        "ratio Saigon / base ceiling",
        "ratio cache cliff / all resident",
    ):
        assert rows[key] > 0, key
    assert report.notes["cliff_evictions"] > 0  # the cliff run really swapped adapters
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
