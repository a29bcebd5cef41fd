"""PNG plots of benchmark results (matplotlib, imported only when a plot is asked for)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path


def plot_engine(rows: dict[str, float], sweep: dict[int, float], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    bars = {
        "base alone\n(ceiling)": rows.get("tok/s base model alone, batched (ceiling)", 0.0),
        "PEFT\none at a time": rows.get("tok/s original design: PEFT set_adapter+generate, 1 by 1", 0.0),
        "PEFT\nmixed batch": rows.get("tok/s PEFT mixed batch generate(adapter_names=...)", 0.0),
        "Saigon\nmixed": rows.get("tok/s Saigon, mixed adapters", 0.0),
    }
    left.bar(list(bars), list(bars.values()), color=["#888", "#c44", "#e90", "#27a"])
    left.set_ylabel("tokens / s")
    left.set_title("16 requests, one adapter each")
    for i, v in enumerate(bars.values()):
        left.text(i, v, f"{v:.0f}", ha="center", va="bottom")
    xs = sorted(sweep)
    right.plot(xs, [sweep[x] for x in xs], marker="o", color="#27a")
    right.set_xscale("log", base=2)
    right.set_xticks(xs, [str(x) for x in xs])
    right.set_xlabel("distinct adapters among 64 requests")
    right.set_ylabel("tokens / s")
    right.set_title("Saigon: distinct adapters sweep")
    right.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


@dataclass(frozen=True)
class GridBar:
    """One grid point: Saigon's ratio to the ceiling and to PEFT's mixed batch in each round."""

    label: str
    vs_ceiling: list[float]
    vs_peft: list[float]


def plot_grid(points: list[GridBar], out: Path, machine: str) -> None:
    """The grid benchmark: Saigon ÷ ceiling and ÷ PEFT mixed for each point (median of the rounds,
    whiskers over their spread), with the targets and the machine it ran on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [p.label for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, max(4.0, 0.32 * len(points) + 2.0)), sharey=True)
    ys = list(range(len(points)))
    for axis, ratios, color, (target, target_label), name in (
        (
            left,
            [p.vs_ceiling for p in points],
            "#27a",
            (0.75, "target 0.75 (>= 8 adapters)"),
            "Saigon ÷ base-only ceiling",
        ),
        (right, [p.vs_peft for p in points], "#e90", (2.5, "target 2.5"), "Saigon ÷ PEFT mixed batch"),
    ):
        medians = [statistics.median(r) for r in ratios]
        low = [m - min(r) for m, r in zip(medians, ratios, strict=True)]
        high = [max(r) - m for m, r in zip(medians, ratios, strict=True)]
        axis.barh(ys, medians, color=color, xerr=[low, high], ecolor="#333", capsize=2)
        axis.axvline(target, color="#c44", linestyle="--", label=target_label)
        axis.set_xlabel(name)
        axis.legend(loc="lower right")
    left.set_yticks(ys, labels, fontsize=8)
    left.invert_yaxis()
    fig.suptitle(f"Saigon at default settings (one process, interleaved)\n{machine}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
