"""PNG plots of benchmark results (matplotlib, imported only when a plot is asked for).

Every plot names the hardware it was measured on (bench.hardware.describe) and shows the spread
over repeats: the bar or line is the median, whiskers or a band span the fastest and slowest
round, and dots are the rounds themselves.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MEDIAN_NOTE = "bars and lines: median; whiskers and bands: min to max over rounds; dots: each round"


def caption(fig: Any, hardware: str, note: str = MEDIAN_NOTE) -> None:
    """The hardware line and how to read the spread, under the axes."""
    fig.text(0.01, 0.012, f"{hardware}\n{note}", fontsize=7.5, color="#444", va="bottom", ha="left")
    fig.tight_layout(rect=(0, 0.08, 1, 1))


def spread_bars(ax: Any, labels: Sequence[str], samples: Sequence[Sequence[float]], colors: Sequence[str]) -> None:
    """Median bars with min-max whiskers and one dot per round."""
    medians = [statistics.median(s) if s else 0.0 for s in samples]
    low = [m - min(s) if s else 0.0 for m, s in zip(medians, samples, strict=True)]
    high = [max(s) - m if s else 0.0 for m, s in zip(medians, samples, strict=True)]
    xs = list(range(len(labels)))
    ax.bar(xs, medians, color=list(colors), yerr=[low, high], capsize=4, ecolor="#222")
    for x, values in zip(xs, samples, strict=True):
        ax.scatter([x] * len(values), values, s=10, color="#111", zorder=3)
    ax.set_xticks(xs, list(labels))
    for x, value, top in zip(xs, medians, high, strict=True):
        ax.text(x, value + top, f"{value:.2f}" if value < 10 else f"{value:.0f}", ha="center", va="bottom")


def plot_engine(
    samples: Mapping[str, Sequence[float]], sweep: Mapping[int, Sequence[float]], hardware: str, out: Path
) -> None:
    """`samples`: tokens/s of each approach in every interleaved round; `sweep`: Saigon's tokens/s
    for each count of distinct adapters, every run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    bars = {
        "base alone\n(ceiling)": samples.get("ceiling", ()),
        "PEFT\none at a time": samples.get("original", ()),
        "PEFT\nmixed batch": samples.get("peft_mixed", ()),
        "Saigon\nmixed": samples.get("saigon", ()),
    }
    spread_bars(left, list(bars), list(bars.values()), ["#888", "#c44", "#e90", "#27a"])
    left.set_ylabel("tokens / s")
    rounds = max((len(s) for s in bars.values()), default=0)
    left.set_title(f"16 requests, one adapter each ({rounds} interleaved rounds)")
    xs = sorted(sweep)
    medians = [statistics.median(sweep[x]) for x in xs]
    right.plot(xs, medians, marker="o", color="#27a")
    right.fill_between(xs, [min(sweep[x]) for x in xs], [max(sweep[x]) for x in xs], color="#27a", alpha=0.2)
    for x in xs:
        right.scatter([x] * len(sweep[x]), sweep[x], s=10, color="#111", zorder=3)
    right.set_xscale("log", base=2)
    right.set_xticks(xs, [str(x) for x in xs])
    right.set_xlabel("distinct adapters among 64 requests")
    right.set_ylabel("tokens / s")
    right.set_title("Saigon: distinct adapters sweep")
    right.set_ylim(bottom=0)
    caption(fig, hardware)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_grid(
    points: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    hardware: str,
    out: Path,
    bounds: Sequence[float] = (),
) -> None:
    """The grid benchmark: Saigon ÷ ceiling and ÷ PEFT mixed for each point (one ratio per
    interleaved round), with the targets and, where given, each point's memory bound ÷ ceiling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [p[0] for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, max(4.0, 0.32 * len(points) + 2.0)), sharey=True)
    ys = list(range(len(points)))
    for ax, rounds, color in ((left, [p[1] for p in points], "#27a"), (right, [p[2] for p in points], "#e90")):
        medians = [statistics.median(r) for r in rounds]
        err = [[m - min(r) for m, r in zip(medians, rounds, strict=True)],
               [max(r) - m for m, r in zip(medians, rounds, strict=True)]]  # fmt: skip
        ax.barh(ys, medians, color=color, xerr=err, capsize=3, ecolor="#222")
        for y, values in zip(ys, rounds, strict=True):
            ax.scatter(values, [y] * len(values), s=8, color="#111", zorder=3)
    if bounds:
        left.scatter(bounds, ys, marker="|", s=220, color="#c44", zorder=4, label="memory bound")
    left.axvline(0.75, color="#c44", linestyle="--", label="target 0.75 (>= 8 adapters)")
    left.set_xlabel("Saigon ÷ base-only ceiling")
    left.legend(loc="lower right")
    right.axvline(2.5, color="#c44", linestyle="--", label="target 2.5")
    right.set_xlabel("Saigon ÷ PEFT mixed batch")
    right.legend(loc="lower right")
    left.set_yticks(ys, labels, fontsize=8)
    left.invert_yaxis()
    fig.suptitle("Saigon at default settings (one process, interleaved)")
    caption(
        fig,
        hardware,
        "bars: median ratio; whiskers: min to max over rounds; dots: each round's ratio; red ticks: Saigon "
        "without adapters plus one read of each step's adapter weights at the measured memory bandwidth",
    )
    fig.savefig(out, dpi=110)
    plt.close(fig)
