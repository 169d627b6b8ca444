"""Both dashboards against Grafana's own schema and Prometheus' own PromQL parser.

hack/dashcheck (Go, built once per source change into ~/.cache/clip-operator by
hack/dashcheck/build.sh) decodes a dashboard strictly with
github.com/grafana/grafana-foundation-sdk/go, each panel's options and custom field config by
the types of its panel type, and parses every expression with
github.com/prometheus/prometheus/promql/parser after replacing Grafana's variables. These
tests run it on our dashboards and on broken copies of them: each broken copy must fail,
naming what is wrong.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))


@pytest.fixture(scope="module")
def dashcheck() -> str:
    if shutil.which("go") is None:
        pytest.skip("go not found: apt-get install golang (dashcheck is built from the Go proxy)")
    built = subprocess.run(
        [str(REPO / "hack/dashcheck/build.sh")], capture_output=True, text=True, timeout=900
    )
    assert built.returncode == 0, built.stderr
    return built.stdout.strip().splitlines()[-1]


def check(dashcheck: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([dashcheck, *map(str, paths)], capture_output=True, text=True, timeout=60)


def broken(tmp_path: Path, name: str, change: Callable[[dict[str, Any]], None]) -> Path:
    doc = json.loads((REPO / "dashboards" / name).read_text(encoding="utf-8"))
    doc = copy.deepcopy(doc)
    change(doc)
    out = tmp_path / name
    out.write_text(json.dumps(doc), encoding="utf-8")
    return out


def by_type(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    panel: dict[str, Any] = next(p for p in doc["panels"] if p["type"] == kind)
    return panel


def test_our_dashboards_pass(dashcheck: str) -> None:
    result = check(dashcheck, *DASHBOARDS)
    assert result.returncode == 0, result.stderr
    for path in DASHBOARDS:
        assert f"{path}: ok" in result.stdout


def test_unknown_top_level_field_fails(dashcheck: str, tmp_path: Path) -> None:
    path = broken(tmp_path, "clip-overview.json", lambda d: d.update(refreshh="10s"))
    result = check(dashcheck, path)
    assert result.returncode == 1
    assert "refreshh" in result.stderr


def test_unknown_panel_field_fails(dashcheck: str, tmp_path: Path) -> None:
    path = broken(tmp_path, "clip-operator.json", lambda d: d["panels"][1].update(fieldconfig={}))
    result = check(dashcheck, path)
    assert result.returncode == 1
    assert "fieldconfig" in result.stderr


def test_gauge_option_of_the_wrong_type_fails(dashcheck: str, tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        by_type(d, "gauge")["options"]["showThresholdMarkers"] = "yes"

    result = check(dashcheck, broken(tmp_path, "clip-overview.json", change))
    assert result.returncode == 1
    assert "showThresholdMarkers" in result.stderr


def test_gauge_option_unknown_to_gauges_fails(dashcheck: str, tmp_path: Path) -> None:
    """A stat panel's option is not a gauge's: options are checked per panel type."""

    def change(d: dict[str, Any]) -> None:
        by_type(d, "gauge")["options"]["graphMode"] = "area"

    result = check(dashcheck, broken(tmp_path, "clip-overview.json", change))
    assert result.returncode == 1
    assert "graphMode" in result.stderr


def test_heatmap_colour_of_the_wrong_type_fails(dashcheck: str, tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        by_type(d, "heatmap")["options"]["color"]["steps"] = "64"

    result = check(dashcheck, broken(tmp_path, "clip-overview.json", change))
    assert result.returncode == 1
    assert "steps" in result.stderr


def test_timeseries_custom_field_config_is_checked(dashcheck: str, tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        by_type(d, "timeseries")["fieldConfig"]["defaults"]["custom"]["lineWidht"] = 1

    result = check(dashcheck, broken(tmp_path, "clip-overview.json", change))
    assert result.returncode == 1
    assert "lineWidht" in result.stderr


def test_unknown_panel_type_fails(dashcheck: str, tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        by_type(d, "gauge")["type"] = "gauges"

    result = check(dashcheck, broken(tmp_path, "clip-overview.json", change))
    assert result.returncode == 1
    assert 'panel type "gauges" is not known' in result.stderr


def test_broken_promql_fails(dashcheck: str, tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        by_type(d, "gauge")["targets"][0]["expr"] = "sum(rate(clip_jobs_queued_total[5m]) * 300"

    result = check(dashcheck, broken(tmp_path, "clip-overview.json", change))
    assert result.returncode == 1
    assert "PromQL" in result.stderr and "Jobs Queued Rate" in result.stderr


def test_broken_variable_selector_fails(dashcheck: str, tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        var = next(v for v in d["templating"]["list"] if v["name"] == "namespace")
        var["query"]["query"] = 'label_values(clip_jobs_inflight{cluster=~"$cluster", namespace)'

    result = check(dashcheck, broken(tmp_path, "clip-operator.json", change))
    assert result.returncode == 1
    assert "variable namespace" in result.stderr


def test_grafana_variables_are_substituted_before_parsing(dashcheck: str, tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        by_type(d, "gauge")["targets"][0]["expr"] = (
            'sum(increase(x{a=~"${namespace:regex}",b="$job"}[$__range])) / $__range_s'
            " + sum(rate(y[$__rate_interval])) + sum(increase(z[$__interval]))"
        )

    result = check(dashcheck, broken(tmp_path, "clip-overview.json", change))
    assert result.returncode == 0, result.stderr


def test_theme_must_be_dark_or_light(dashcheck: str, tmp_path: Path) -> None:
    """`style` (the theme) is gone from the schema; the checker allows its two values only."""
    result = check(dashcheck, broken(tmp_path, "clip-overview.json", lambda d: d.update(style=1)))
    assert result.returncode == 1
    assert "style" in result.stderr


def test_unknown_field_config_default_fails(dashcheck: str, tmp_path: Path) -> None:
    """The SDK's panel decoder reads fieldConfig loosely; dashcheck decodes it strictly."""

    def change(d: dict[str, Any]) -> None:
        by_type(d, "timeseries")["fieldConfig"]["defaults"]["unti"] = "s"

    result = check(dashcheck, broken(tmp_path, "clip-overview.json", change))
    assert result.returncode == 1
    assert "unti" in result.stderr


def test_threshold_of_the_wrong_type_fails(dashcheck: str, tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        by_type(d, "timeseries")["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] = (
            "80"
        )

    result = check(dashcheck, broken(tmp_path, "clip-overview.json", change))
    assert result.returncode == 1
    assert "thresholds.steps" in result.stderr


def test_unknown_query_and_variable_fields_fail(dashcheck: str, tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        by_type(d, "timeseries")["targets"][0]["legendFormatt"] = "x"
        d["templating"]["list"][1]["includeAlll"] = True

    result = check(dashcheck, broken(tmp_path, "clip-operator.json", change))
    assert result.returncode == 1
    assert "legendFormatt" in result.stderr and "includeAlll" in result.stderr
