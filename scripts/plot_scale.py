#!/usr/bin/env python
"""The README's scale table and plot from `scripts/scale_adapters.py --json` files.

.venv/bin/python scripts/plot_scale.py docs/scale/*.json --plot docs/scale.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def row(figures: dict[str, Any]) -> dict[str, Any]:
    api = figures.get("api_requests") or {}
    fault = figures.get("fault") or {}
    return {
        "adapters": figures["adapters"],
        "pods": figures["pods"],
        "placed": 2 if figures.get("router") and figures["pods"] > 2 else figures["pods"],
        "fault": fault.get("kind", ""),
        "ready_at_fault": fault.get("ready_at_fault"),
        "fault_to_ready_s": fault.get("to_all_ready_s"),
        "ready_s": figures.get("time_to_all_ready_on_all_pods_s"),
        "targets_s": figures.get("time_to_all_targets_s"),
        "requests": api.get("operator_per_adapter"),
        # From the audit log: every operator's writes (the metric is only the last operator's).
        "status_writes": round(
            (api.get("operator_by_verb") or {}).get("patch saigonadapters/status", 0) / figures["adapters"], 2
        ),
        "rss": figures.get("operator_peak_rss_mib"),
        "cpu": (figures.get("operator_after") or {}).get("cpu_s"),
        "restarts": len(figures.get("operator_restarts") or []),
        "in_place": figures.get("operator_lease_losses") or 0,
        "load": (figures.get("load_before") or [None])[0],
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| adapters | replicas (each adapter on) | fault | all Ready | fault → all Ready "
        "| operator API requests / adapter | status writes / adapter | operator peak RSS | operator CPU "
        "| load average at start |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        fault = f"{r['fault']} at {r['ready_at_fault']} Ready" if r["fault"] else "none"
        fault_s = f"{r['fault_to_ready_s']} s" if r["fault_to_ready_s"] is not None else "-"
        if r["restarts"]:
            fault += f" ({r['restarts']} lease losses, process restarted)"
        if r["in_place"]:
            fault += f" ({r['in_place']} lease losses, started over in place)"
        lines.append(
            f"| {r['adapters']:,} | {r['pods']} ({r['placed']}) | {fault} | {r['ready_s']} s | {fault_s} "
            f"| {r['requests']} | {r['status_writes']} | {r['rss']} MiB | {r['cpu']} s | {r['load']} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean = [r for r in rows if not r["fault"]]
    labels = [f"{r['adapters']:,}\n{r['pods']} repl. (on {r['placed']})" for r in clean]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key, title, limit in (
        (axes[0], "ready_s", "time to all Ready (s)", 300),
        (axes[1], "requests", "operator API requests / adapter", 3),
        (axes[2], "rss", "operator peak RSS (MiB)", 300),
    ):
        values = [r[key] or 0 for r in clean]
        ax.bar(labels, values, color="#27a")
        ax.axhline(limit, color="#c44", linestyle="--", linewidth=1, label=f"target {limit}")
        ax.set_title(title)
        ax.legend(loc="upper left")
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:g}", ha="center", va="bottom")
    from saigon_runtime.bench.hardware import describe

    fig.text(0.5, 0.005, f"one run each; {describe()}", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    rows = sorted(
        (row(json.loads(f.read_text())) for f in args.files), key=lambda r: (bool(r["fault"]), r["adapters"], r["pods"])
    )
    print(table(rows))
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
