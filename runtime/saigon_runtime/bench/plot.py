"""PNG plots of benchmark results (matplotlib, imported only when a plot is asked for)."""

from __future__ import annotations

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


def plot_grid(points: list[tuple[str, float, float]], out: Path) -> None:
    """The grid benchmark: Saigon ÷ ceiling and ÷ PEFT mixed for each point, with the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [p[0] for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, max(4.0, 0.32 * len(points) + 1.5)), sharey=True)
    ys = range(len(points))
    left.barh(ys, [p[1] for p in points], color="#27a")
    left.axvline(0.75, color="#c44", linestyle="--", label="target 0.75 (>= 8 adapters)")
    left.set_xlabel("Saigon ÷ base-only ceiling")
    left.legend(loc="lower right")
    right.barh(ys, [p[2] for p in points], color="#e90")
    right.axvline(2.5, color="#c44", linestyle="--", label="target 2.5")
    right.set_xlabel("Saigon ÷ PEFT mixed batch")
    right.legend(loc="lower right")
    left.set_yticks(list(ys), labels, fontsize=8)
    left.invert_yaxis()
    fig.suptitle("Saigon at default settings (CPU, one process, interleaved)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
