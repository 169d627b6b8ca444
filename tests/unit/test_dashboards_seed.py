"""The Clip Overview's four seed panels, pinned to the Meme Maker's specification.

The spec (issue 19): Jobs In Flight, a time series, red at 80 or more; Jobs Queued Rate, a
gauge of `rate(clip_jobs_queued_total[5m]) * 300`, red at 15 or more; Job Latency, a heatmap
of `rate(clip_job_latency_seconds_bucket[5m])` in the Spectral scheme with 64 steps; Error
Rate, `rate(...{status="error"}[5m]) / rate(...[5m])`, red at 5 %. Dark, 10 s refresh,
30 minutes shown. Every property below fails the test when it changes. Our refinements live
in the Clip Operator dashboard (dashboards/README.md says why); they are pinned here too, so
that the two cannot swap by accident.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
# Every query is scoped by the dashboard's variables (all default to "All").
SEL = 'cluster=~"$cluster",namespace=~"$namespace",job=~"$job"'

SEED = {
    "Jobs In Flight": {
        "type": "timeseries",
        "expr": f"max(clip_jobs_inflight{{{SEL}}})",
        "red": 80,
        "gridPos": {"h": 8, "w": 12, "x": 0, "y": 0},
    },
    "Jobs Queued Rate": {
        "type": "gauge",
        "expr": f"sum(rate(clip_jobs_queued_total{{{SEL}}}[5m])) * 300",
        "red": 15,
        "gridPos": {"h": 8, "w": 12, "x": 12, "y": 0},
    },
    "Job Latency": {
        "type": "heatmap",
        "expr": f"sum by (le) (rate(clip_job_latency_seconds_bucket{{{SEL}}}[5m]))",
        "red": None,
        "gridPos": {"h": 8, "w": 12, "x": 0, "y": 8},
    },
    "Error Rate": {
        "type": "timeseries",
        "expr": (
            f'sum(rate(clip_job_latency_seconds_count{{{SEL},status="error"}}[5m])) / '
            f"sum(rate(clip_job_latency_seconds_count{{{SEL}}}[5m]))"
        ),
        "red": 0.05,
        "gridPos": {"h": 8, "w": 12, "x": 12, "y": 8},
    },
}


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DASHBOARDS / name).read_text(encoding="utf-8"))
    return doc


def panel(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    found = [p for p in dashboard["panels"] if p.get("title") == title]
    assert len(found) == 1, f"one panel titled {title!r}, found {len(found)}"
    return found[0]


def thresholds(p: dict[str, Any]) -> list[tuple[str, float | None]]:
    steps = p["fieldConfig"]["defaults"]["thresholds"]
    assert steps["mode"] == "absolute"
    return [(s["color"], s["value"]) for s in steps["steps"]]


def test_overview_dashboard_settings() -> None:
    d = load("clip-overview.json")
    assert d["style"] == "dark"
    assert d["refresh"] == "10s"
    assert d["time"] == {"from": "now-30m", "to": "now"}
    assert "10s" in d["timepicker"]["refresh_intervals"]


def test_the_seed_panels_come_first_in_the_spec_order() -> None:
    titles = [p["title"] for p in load("clip-overview.json")["panels"][:4]]
    assert titles == list(SEED)


@pytest.mark.parametrize("title", list(SEED))
def test_seed_panel(title: str) -> None:
    want = SEED[title]
    p = panel(load("clip-overview.json"), title)
    assert p["type"] == want["type"]
    assert p["gridPos"] == want["gridPos"]
    assert len(p["targets"]) == 1
    target = p["targets"][0]
    assert target["expr"] == want["expr"]
    assert target.get("range") is True and not target.get("instant")
    if want["red"] is not None:
        assert thresholds(p) == [("green", None), ("red", want["red"])]


def test_in_flight_and_error_rate_draw_their_red_line() -> None:
    d = load("clip-overview.json")
    for title in ("Jobs In Flight", "Error Rate"):
        custom = panel(d, title)["fieldConfig"]["defaults"]["custom"]
        assert custom["thresholdsStyle"] == {"mode": "line"}, title
    assert panel(d, "Error Rate")["fieldConfig"]["defaults"]["unit"] == "percentunit"


def test_queued_rate_gauge_colours_by_threshold_and_shows_markers() -> None:
    p = panel(load("clip-overview.json"), "Jobs Queued Rate")
    assert p["fieldConfig"]["defaults"]["color"] == {"mode": "thresholds"}
    assert p["options"]["showThresholdMarkers"] is True
    assert p["options"]["reduceOptions"]["calcs"] == ["lastNotNull"]


def test_latency_heatmap_is_spectral_with_64_steps() -> None:
    p = panel(load("clip-overview.json"), "Job Latency")
    color = p["options"]["color"]
    assert color["mode"] == "scheme"
    assert color["scheme"] == "Spectral"
    assert color["steps"] == 64
    assert color["reverse"] is False
    assert p["options"]["calculate"] is False, "the buckets are Prometheus' own"
    assert p["targets"][0]["format"] == "heatmap"
    assert p["targets"][0]["legendFormat"] == "{{le}}"
    assert p["options"]["yAxis"]["unit"] == "s"


def test_refined_variants_live_in_the_operator_dashboard() -> None:
    """The better variants (README: why) sit in the Clip Operator dashboard, not the seed's."""
    d = load("clip-operator.json")
    row = panel(d, "Clip Overview, refined")
    assert row["type"] == "row"
    accepted = panel(d, "ClipJobs accepted")
    assert accepted["type"] == "timeseries"
    assert accepted["targets"][0]["expr"] == (
        f"sum(rate(clip_jobs_queued_total{{{SEL}}}[$__rate_interval]))"
    )
    assert accepted["fieldConfig"]["defaults"]["unit"] == "ops"
    cells = panel(d, "Job Latency (ClipJobs per cell)")
    assert cells["type"] == "heatmap"
    assert cells["targets"][0]["expr"] == (
        f"sum by (le) (increase(clip_job_latency_seconds_bucket{{{SEL}}}[$__interval]))"
    )
    assert cells["targets"][0]["interval"] == "1m"
    assert cells["options"]["color"]["scheme"] == "Spectral"
    assert cells["options"]["color"]["steps"] == 64
