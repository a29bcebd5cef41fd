#!/usr/bin/env python3
"""Draw the chart's Grafana dashboards to PNG from a real Prometheus.

Each panel's queries run as range queries against the Prometheus at --prometheus (Grafana's
variables replaced: $__rate_interval by --rate-interval, $namespace/$model by "all" unless
--var says otherwise), and come out as matplotlib line charts laid out on the dashboard's grid.

    .venv/bin/python scripts/render_dashboards.py --prometheus http://127.0.0.1:9090 \\
        --start -15m --out docs/dashboards

tests/test_dashboards.py runs it against a live runtime and operator; with
SAIGON_DASHBOARD_PNG_DIR=docs/dashboards that test refreshes the README's pictures.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parents[1] / "charts" / "saigon" / "dashboards"
ALL = ".*"  # Grafana's allValue for every variable of these dashboards
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
GRID_COLUMNS = 24


@dataclass(frozen=True)
class Series:
    legend: str
    times: list[float]
    values: list[float]


def substitute(expr: str, rate_interval: str, variables: Mapping[str, str] | None = None) -> str:
    """Grafana's template variables -> plain PromQL."""
    chosen = dict(variables or {})

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name == "__rate_interval":
            return rate_interval
        return chosen.get(name, ALL)

    return _VARIABLE.sub(replace, expr)


def legend(template: str, labels: Mapping[str, str]) -> str:
    if not template:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return _LEGEND.sub(lambda m: labels.get(m.group(1), ""), template)


def prometheus_get(base_url: str, path: str, params: Mapping[str, str], timeout: float = 30.0) -> Any:
    url = f"{base_url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (an http URL the user gave)
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
    return body["data"]


def query_range(base_url: str, expr: str, start: float, end: float, step: float, legend_format: str) -> list[Series]:
    data = prometheus_get(
        base_url, "/api/v1/query_range", {"query": expr, "start": str(start), "end": str(end), "step": str(step)}
    )
    out = []
    for result in data["result"]:
        points = [(float(t), float(v)) for t, v in result["values"]]
        out.append(Series(legend(legend_format, result["metric"]), [t for t, _ in points], [v for _, v in points]))
    return out


def on_grid(series: Series, start: float, end: float, step: float) -> tuple[list[float], list[float]]:
    """The series on the query's time grid, NaN where it has no sample: lines break at gaps,
    as Grafana draws them (spanNulls off)."""
    by_time = {round(t, 3): v for t, v in zip(series.times, series.values, strict=True)}
    count = int((end - start) / step) + 1
    times = [start + i * step for i in range(count)]
    return times, [by_time.get(round(t, 3), math.nan) for t in times]


def line_style(overrides: Sequence[Mapping[str, Any]], name: str) -> str:
    """Grafana's per-series override of the line style (matched by regex on the series name)."""
    for override in overrides:
        matcher = override.get("matcher", {})
        if matcher.get("id") == "byRegexp" and re.fullmatch(str(matcher.get("options", "")), name):
            for prop in override.get("properties", []):
                if prop.get("id") == "custom.lineStyle" and prop.get("value", {}).get("fill") == "dash":
                    return "--"
    return "-"


def _axis_label(unit: str) -> str:
    return {
        "s": "seconds",
        "bytes": "bytes",
        "percentunit": "fraction",
        "reqps": "requests/s",
        "ops": "per second",
    }.get(unit, "")


def render(
    dashboard: Mapping[str, Any],
    base_url: str,
    out: Path,
    *,
    start: float,
    end: float,
    step: float,
    rate_interval: str,
    variables: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Writes one PNG; returns the number of series drawn per panel title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_height = 0.42  # inches per grid row
    header = 0.7
    fig_height = rows * unit_height + header
    fig = plt.figure(figsize=(16, fig_height), dpi=100)
    fig.suptitle(dashboard["title"], x=0.01, y=1 - 0.15 / fig_height, ha="left", fontsize=15, fontweight="bold")
    drawn: dict[str, int] = {}
    for panel in panels:
        grid = panel["gridPos"]
        pad_x, pad_top, pad_bottom = 0.045, 0.55, 0.75  # room for tick labels and the title
        left = grid["x"] / GRID_COLUMNS + pad_x * 0.9
        width = grid["w"] / GRID_COLUMNS - pad_x * 1.3
        top_in = header + grid["y"] * unit_height + pad_top
        height_in = grid["h"] * unit_height - pad_top - pad_bottom
        ax = fig.add_axes((left, 1 - (top_in + height_in) / fig_height, width, height_in / fig_height))
        field_config = panel.get("fieldConfig", {})
        unit = field_config.get("defaults", {}).get("unit", "")
        count = 0
        for target in panel["targets"]:
            expr = substitute(target["expr"], rate_interval, variables)
            for series in query_range(base_url, expr, start, end, step, target.get("legendFormat", "")):
                times, values = on_grid(series, start, end, step)
                if not any(math.isfinite(v) for v in values):
                    continue
                # Later series thinner, so that equal series stay visible one inside the other.
                ax.plot(
                    [matplotlib.dates.date2num(_utc(t)) for t in times],
                    values,
                    linewidth=max(2.6 - 0.7 * count, 1.0),
                    linestyle=line_style(field_config.get("overrides", []), series.legend),
                    label=series.legend,
                )
                count += 1
        drawn[panel["title"]] = count
        ax.set_title(panel["title"], loc="left", fontsize=11)
        ax.set_ylabel(_axis_label(unit), fontsize=8)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        ax.set_xlim(matplotlib.dates.date2num(_utc(start)), matplotlib.dates.date2num(_utc(end)))
        if unit == "percentunit":
            ax.set_ylim(0, 1.05)
        if count:
            ax.legend(fontsize=7, loc="upper left", ncol=2, framealpha=0.6)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return drawn


def _utc(seconds: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC)


def _time(value: str, now: float) -> float:
    """Unix seconds, or a negative offset from now such as -15m, -90s, -1h."""
    match = re.fullmatch(r"-(\d+(?:\.\d+)?)([smh])", value)
    if match:
        return now - float(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]
    return float(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--start", default="-15m", help="unix seconds or an offset such as -15m")
    parser.add_argument("--end", default="-0s", help="unix seconds or an offset (default now)")
    parser.add_argument("--step", type=float, default=0.0, help="seconds between points (default: range/300)")
    parser.add_argument("--rate-interval", default="1m", help="what $__rate_interval stands for")
    parser.add_argument("--var", action="append", default=[], help="NAME=REGEX for a dashboard variable")
    parser.add_argument("--dashboards", type=Path, default=DASHBOARDS, help="directory of dashboard JSON files")
    parser.add_argument("--out", type=Path, required=True, help="directory for <dashboard>.png")
    args = parser.parse_args(argv)
    now = time.time()
    start, end = _time(args.start, now), _time(args.end, now)
    if end <= start:
        parser.error("--end must be after --start")
    step = args.step or max((end - start) / 300, 1.0)
    variables = dict(item.split("=", 1) for item in args.var)
    boards = sorted(args.dashboards.glob("*.json"))
    if not boards:
        parser.error(f"no dashboards in {args.dashboards}")
    for path in boards:
        dashboard = json.loads(path.read_text())
        out = args.out / f"{path.stem}.png"
        drawn = render(
            dashboard,
            args.prometheus,
            out,
            start=start,
            end=end,
            step=step,
            rate_interval=args.rate_interval,
            variables=variables,
        )
        empty = [title for title, count in drawn.items() if count == 0]
        print(json.dumps({"dashboard": path.stem, "png": str(out), "series": drawn, "empty_panels": empty}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
