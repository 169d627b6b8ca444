"""Render a Grafana dashboard JSON to a PNG from a real Prometheus (a small, partial Grafana).

    python docs/dashboards/render.py --prometheus http://127.0.0.1:9090 \\
        --start 1764370000 --end 1764370600 --out docs/dashboards dashboards/*.json

Each panel's queries run through Prometheus' HTTP API with Grafana's variables replaced;
time series, stat, gauge and heatmap panels are drawn where their gridPos puts them. It
shows what the dashboards show; it is not a pixel copy of Grafana. Needs matplotlib.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import Wedge

GRID_W, ROW_H = 24, 0.42  # columns, inches per grid row
FIG_W = 18.0
BG, PANEL_BG, FG, MUTED = "#111217", "#181b1f", "#ccccdc", "#8e8e9e"
PALETTE = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a"]
COLORS = {"green": "#73bf69", "red": "#f2495c", "yellow": "#fade2a", "orange": "#ff9830"}
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Prometheus:
    """Just enough of Prometheus' HTTP API."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with _NO_PROXY.open(f"{self.url}{path}?{query}", timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{path} {params}: {exc.read().decode(errors='replace')}") from exc
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/v1/query", query=expr, time=str(at))["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get(
            "/api/v1/query_range", query=expr, start=str(start), end=str(end), step=str(step)
        )["result"]
        return result


def grafana_variables(
    dashboard: dict[str, Any],
    prom: Prometheus,
    start: float,
    end: float,
    step: float,
    scrape: float,
) -> dict[str, str]:
    """Values for Grafana's variables as Grafana would pick them for this time range."""
    values = {
        "__rate_interval": f"{int(max(4 * scrape, step + scrape))}s",
        "__interval": f"{int(step)}s",
        "__range": f"{int(end - start)}s",
        "__range_s": str(int(end - start)),
    }
    for var in dashboard.get("templating", {}).get("list", []):
        if var["type"] == "query" and var.get("allValue"):
            values[var["name"]] = var["allValue"]  # the default, "All", with a custom value
        elif var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q)
            if m:
                match = substitute(m.group(1), values)  # variables chain: $cluster in $job's
                found = prom.get(f"/api/v1/label/{m.group(2)}/values", **{"match[]": match})
                # Regex-escaped, with the backslash doubled for a PromQL string literal.
                escaped = (re.sub(r"([.*+?^${}()|\[\]\\])", r"\\\\\1", v) for v in found)
                values[var["name"]] = "(" + "|".join(escaped) + ")"
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    pattern = r"\$\{(\w+)(?::\w+)?\}|\$(\w+)"
    return re.sub(pattern, lambda m: values.get(m.group(1) or m.group(2), ".+"), expr)


def legend(fmt: str, metric: dict[str, str]) -> str:
    if not fmt:
        return ",".join(f'{k}="{v}"' for k, v in metric.items() if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt)


def fmt_value(value: float, unit: str, decimals: int | None = None) -> str:
    if math.isnan(value):
        return "NaN"
    if decimals is not None and unit in ("short", "none"):
        return f"{value:.{decimals}f}"
    if unit == "percentunit":
        return f"{value * 100:.2f}%" if abs(value) < 0.01 else f"{value * 100:.1f}%"
    if unit == "s":
        if value >= 3600:
            return f"{value / 3600:.1f} h"
        if value >= 60:
            return f"{value / 60:.1f} min"
        return f"{value:.2f} s" if value < 10 else f"{value:.0f} s"
    if unit in ("bytes", "Bps"):
        suffix = "/s" if unit == "Bps" else ""
        for prefix in ("B", "KiB", "MiB", "GiB"):
            if abs(value) < 1024 or prefix == "GiB":
                return f"{value:.1f} {prefix}{suffix}"
            value /= 1024
    if unit == "ops":
        return f"{value:.2f} ops/s"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def threshold_color(value: float, panel: dict[str, Any]) -> str:
    steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
    color = "green"
    for step in steps:
        if step["value"] is None or value >= step["value"]:
            color = step["color"]
    return COLORS.get(color, color)


def clock(value: float, _pos: float = 0) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(value))


def style_axes(ax: Axes, title: str) -> None:
    ax.set_facecolor(PANEL_BG)
    ax.set_title(title, color=FG, fontsize=9, loc="left")
    ax.tick_params(colors=MUTED, labelsize=7)
    for spine in ax.spines.values():
        spine.set_color("#2c3235")


def draw_timeseries(
    ax: Axes, panel: dict[str, Any], series: list[tuple[str, Any]], step: float
) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    unit = defaults.get("unit", "short")
    stacked = defaults.get("custom", {}).get("stacking", {}).get("mode") == "normal"
    base: dict[float, float] = {}
    for i, (name, values) in enumerate(series):
        xs: list[float] = []
        ys: list[float] = []
        for t, v in values:
            if xs and float(t) - xs[-1] > 2 * step:  # a gap (no samples): no line across it
                xs.append(xs[-1] + step)
                ys.append(math.nan)
            xs.append(float(t))
            ys.append(float(v))
        color = PALETTE[i % len(PALETTE)]
        if stacked:
            below = [base.get(x, 0.0) for x in xs]
            ys = [y + b for y, b in zip(ys, below, strict=True)]
            base.update(zip(xs, ys, strict=True))
            ax.fill_between(xs, below, ys, color=color, alpha=0.35, linewidth=0)
        ax.plot(xs, ys, color=color, linewidth=1.2, label=name)
    mode = defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode", "off")
    if mode != "off" and series:
        low, high = ax.get_ylim()
        if "min" in defaults:
            low = float(defaults["min"])
        for level in defaults.get("thresholds", {}).get("steps", []):
            if level["value"] is not None and level["value"] <= high:
                line = COLORS.get(level["color"], level["color"])
                ax.axhline(level["value"], color=line, linestyle="--", lw=1)
        ax.set_ylim(low, high)  # like Grafana: a threshold line does not stretch the axis
    ax.yaxis.set_major_formatter(lambda v, _pos: fmt_value(v, unit))
    ax.xaxis.set_major_formatter(clock)
    if series:
        ax.legend(fontsize=6, facecolor=PANEL_BG, edgecolor=PANEL_BG, labelcolor=FG, loc="best")
    else:
        ax.text(0.5, 0.5, "No data", color=MUTED, ha="center", va="center", transform=ax.transAxes)


def draw_stat(ax: Axes, panel: dict[str, Any], value: float | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    if value is None:
        ax.text(0.5, 0.45, "No data", color=MUTED, ha="center", va="center", fontsize=12)
        return
    color = threshold_color(value, panel)
    text = fmt_value(value, unit, panel["fieldConfig"]["defaults"].get("decimals"))
    ax.text(0.5, 0.42, text, color=color, ha="center", va="center", fontsize=20)


def draw_gauge(ax: Axes, panel: dict[str, Any], value: float | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlim(-1.2, 1.2)
    ax.set_ylim(-0.4, 1.2)
    ax.set_aspect("equal", adjustable="box")
    defaults = panel["fieldConfig"]["defaults"]
    lo, hi = float(defaults.get("min", 0)), float(defaults.get("max", 100))
    ax.add_patch(Wedge((0, 0), 1.0, 0, 180, width=0.25, color="#2c3235"))
    # The threshold band outside the arc: each step's color from its value upwards.
    steps = defaults.get("thresholds", {}).get("steps", [])
    for i, step in enumerate(steps):
        start = lo if step["value"] is None else float(step["value"])
        stop = hi if i + 1 == len(steps) else float(steps[i + 1]["value"])
        a1 = 180 - 180 * (min(stop, hi) - lo) / (hi - lo)
        a2 = 180 - 180 * (max(start, lo) - lo) / (hi - lo)
        color = COLORS.get(step["color"], step["color"])
        ax.add_patch(Wedge((0, 0), 1.1, a1, a2, width=0.06, color=color))
    if value is None:
        ax.text(0, 0.2, "No data", color=MUTED, ha="center", fontsize=12)
        return
    frac = min(max((value - lo) / (hi - lo), 0.0), 1.0)
    color = threshold_color(value, panel)
    ax.add_patch(Wedge((0, 0), 1.0, 180 - 180 * frac, 180, width=0.25, color=color))
    text = fmt_value(value, defaults.get("unit", "short"))
    ax.text(0, 0.15, text, color=color, ha="center", va="center", fontsize=18)


def draw_heatmap(ax: Axes, panel: dict[str, Any], series: list[dict[str, Any]]) -> None:
    buckets = sorted(series, key=lambda s: float(s["metric"]["le"]))
    if not buckets:
        ax.text(0.5, 0.5, "No data", color=MUTED, ha="center", va="center", transform=ax.transAxes)
        return
    times = [float(t) for t, _ in buckets[0]["values"]]
    cumulative = [[float(v) for _, v in b["values"]] for b in buckets]
    rows = [cumulative[0]] + [
        [max(c - p, 0.0) for c, p in zip(cur, prev, strict=True)]
        for prev, cur in itertools.pairwise(cumulative)
    ]
    masked = [[v if v > 0 else math.nan for v in row] for row in rows]  # empty cells: dark
    ax.imshow(
        masked,
        aspect="auto",
        origin="lower",
        cmap=heatmap_colors(panel),
        interpolation="nearest",
        extent=(times[0], times[-1], 0, len(rows)),
    )
    labels = [b["metric"]["le"] for b in buckets]
    ax.set_yticks([i + 0.5 for i in range(len(labels))], labels, fontsize=6)
    ax.xaxis.set_major_formatter(clock)


def heatmap_colors(panel: dict[str, Any]) -> Any:
    """The panel's colour scheme (Grafana's d3 schemes share matplotlib's names) in its steps."""
    color = panel.get("options", {}).get("color", {})
    cmap = plt.get_cmap(color.get("scheme", "Oranges"), int(color.get("steps", 64)))
    return cmap.reversed() if color.get("reverse") else cmap


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", duration)
    if not m:
        raise ValueError(f"not a duration: {duration}")
    return float(m.group(1)) * units[m.group(2)]


def target_step(
    target: dict[str, Any], step: float, values: dict[str, str]
) -> tuple[float, dict[str, str]]:
    """Grafana's step for a target: the panel's, or the target's min interval if longer."""
    if not target.get("interval"):
        return step, values
    step = max(step, seconds(target["interval"]))
    return step, {**values, "__interval": f"{int(step)}s"}


def render(
    dashboard: dict[str, Any],
    prom: Prometheus,
    start: float,
    end: float,
    out: Path,
    scrape: float,
    until_y: int | None = None,
) -> dict[str, int]:
    """Draw the dashboard (its panels above grid row `until_y`, if given) to `out`; return
    the number of series each panel showed."""
    step = max(1.0, (end - start) / 240)
    values = grafana_variables(dashboard, prom, start, end, step, scrape)
    panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]
    if until_y is not None:
        panels = [p for p in panels if p["gridPos"]["y"] + p["gridPos"]["h"] <= until_y]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    height = rows * ROW_H + 0.6
    fig = plt.figure(figsize=(FIG_W, height), facecolor=BG)
    fig.text(0.01, 1 - 0.3 / height, dashboard["title"], color=FG, fontsize=14, va="center")
    span = f"{clock(start)} to {clock(end)} UTC ({(end - start) / 60:.0f} min), scrape {scrape:g} s"
    fig.text(0.99, 1 - 0.3 / height, span, color=MUTED, fontsize=9, va="center", ha="right")
    shown: dict[str, int] = {}
    for panel in panels:
        g = panel["gridPos"]
        pad = 0.006
        left, width = g["x"] / GRID_W + pad, g["w"] / GRID_W - 2 * pad
        top = 1 - (0.6 + g["y"] * ROW_H) / height
        h = g["h"] * ROW_H / height
        if panel["type"] == "row":
            fig.text(left, top - h / 2, panel["title"], color=FG, fontsize=11, weight="bold")
            continue
        kind = panel["type"]
        if kind in ("stat", "gauge"):
            ax = fig.add_axes((left, top - h + 0.1 / height, width, h - 0.3 / height))
        else:  # leave room for the tick labels inside the panel's cell
            inset = 0.75 / FIG_W
            box = (left + inset, top - h + 0.35 / height, width - inset, h - 0.6 / height)
            ax = fig.add_axes(box)
        style_axes(ax, panel["title"])
        n = 0
        if kind in ("stat", "gauge"):
            target = panel["targets"][0]
            result = prom.query(substitute(target["expr"], values), end)
            value = float(result[0]["value"][1]) if result else None
            n = len(result)
            (draw_gauge if kind == "gauge" else draw_stat)(ax, panel, value)
        elif kind == "heatmap":
            target = panel["targets"][0]
            tstep, tvalues = target_step(target, step, values)
            # Cells of a longer min interval on Grafana's step grid, the last one holding `end`.
            first, last = tstep * math.floor(start / tstep), tstep * math.ceil(end / tstep)
            result = prom.query_range(substitute(target["expr"], tvalues), first, last, tstep)
            n = len(result)
            draw_heatmap(ax, panel, result)
        else:
            series = []
            for target in panel["targets"]:
                expr = substitute(target["expr"], values)
                for s in prom.query_range(expr, start, end, step):
                    series.append(
                        (legend(target.get("legendFormat", ""), s["metric"]), s["values"])
                    )
            n = len(series)
            draw_timeseries(ax, panel, series, step)
        shown[panel["title"]] = n
    fig.savefig(out, dpi=80, facecolor=BG)
    plt.close(fig)
    return shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--start", type=float, required=True)
    parser.add_argument("--end", type=float, required=True)
    parser.add_argument("--scrape-interval", type=float, default=1.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--top",
        type=int,
        metavar="Y",
        help="also draw <name>-top.png: only the panels above grid row Y (16: the seed panels)",
    )
    parser.add_argument("dashboards", nargs="+", type=Path)
    args = parser.parse_args()
    prom = Prometheus(args.prometheus)
    for path in args.dashboards:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        out = args.out / f"{path.stem}.png"
        shown = render(dashboard, prom, args.start, args.end, out, args.scrape_interval)
        print(json.dumps({"png": str(out), "series": shown}))
        if args.top:
            top = args.out / f"{path.stem}-top.png"
            shown = render(
                dashboard, prom, args.start, args.end, top, args.scrape_interval, args.top
            )
            print(json.dumps({"png": str(top), "series": shown}))


if __name__ == "__main__":
    main()
