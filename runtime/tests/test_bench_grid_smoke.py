"""Smoke test of the grid benchmark: a tiny grid runs every approach and reports every point."""

from __future__ import annotations

import json

from saigon_runtime.bench import grid


def test_the_grid_produces_every_point_with_both_ratios_and_a_plot(tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "WIDTHS", {"narrow": (64, 128), "wide": (128, 256)})
    monkeypatch.setattr(grid, "ADAPTER_COUNTS", (2,))
    monkeypatch.setattr(grid, "MIN_REQUESTS", 2)
    out, plot = tmp_path / "grid.json", tmp_path / "grid.png"
    results = grid.main(
        ["--layers", "1", "--prompt-tokens", "4", "--new-tokens", "2", "--rounds", "1",
         "--json", str(out), "--plot", str(plot)]
    )  # fmt: skip
    expected = {
        (w, a, r, t) for w in ("narrow", "wide") for a in (2,) for r in grid.RANK_MIXES for t in grid.TARGET_SETS
    }
    assert {(r.point.width, r.point.adapters, r.point.ranks, r.point.targets) for r in results} == expected
    written = json.loads(out.read_text())
    assert "cores available" in written["hardware"]
    rows = written["points"]
    assert len(rows) == len(expected) == 12
    assert all(len(row["rounds"]["saigon"]) == 1 for row in rows)  # one entry per round: the plot's spread
    assert all(row["ceiling"] > 0 and row["peft_mixed"] > 0 and row["saigon"] > 0 for row in rows)
    assert all(row["vs_ceiling"] == row["saigon"] / row["ceiling"] for row in rows)
    assert plot.stat().st_size > 10_000


def test_adapter_plans_mix_ranks_and_target_sets():
    plans = [grid.adapter_plan(i, "mixed8-64", "mixed") for i in range(8)]
    assert {rank for rank, _ in plans} == {8, 16, 32, 64}
    assert {targets for _, targets in plans} == {grid.ATTENTION, grid.LLAMA_TARGETS}
    assert {grid.adapter_plan(i, "uniform16", "attention") for i in range(4)} == {(16, grid.ATTENTION)}
