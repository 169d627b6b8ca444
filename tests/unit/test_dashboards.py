"""Dashboard lint: provisioning rules, PromQL that parses, metrics the operator exports.

PromQL is parsed by promtool (no Python PromQL parser is worth depending on); metric
names are checked against the operator's live /metrics.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from clip_operator import metrics

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
UIDS = {"clip-overview.json": "clip-overview", "clip-operator.json": "clip-operator"}
DS_REF = {"type": "prometheus", "uid": "${datasource}"}
PROMETHEUS_OWN = {"up"}  # written by Prometheus itself, not the operator

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found: apt-get install prometheus"
)

# Grafana's built-in variables, replaced by a value of the right kind for parsing.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "30m",
    "__range_s": "1800",
    "__range_ms": "1800000",
}
VARIABLE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\$(\w+)|\[\[(\w+)\]\]")
FUNCTION_WITH_RANGE = re.compile(r"\b(\w+)\s*\(\s*[\w:]*\s*(?:\{[^}]*\})?\s*\[([^\]]+)\]")
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "bool", "offset", "inf", "nan", "atan2",
}  # fmt: skip


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DASHBOARDS / name).read_text(encoding="utf-8"))
    return doc


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def substitute(expr: str, defined: dict[str, dict[str, Any]]) -> str:
    """Replace Grafana variables so the expression is plain PromQL; unknown ones fail."""

    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name in BUILTINS:
            return BUILTINS[name]
        assert name in defined, f"undefined variable ${name} in {expr!r}"
        return ".+" if defined[name].get("includeAll") else "x"

    return VARIABLE.sub(value, expr)


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (after variable substitution)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][\w:]*", s):
        if m.start() > 0 and (s[m.start() - 1].isdigit() or s[m.start() - 1] == "."):
            continue  # the exponent of 1e-09 or the unit of 5m
        if m.group(0).lower() in KEYWORDS or s[m.end() :].lstrip().startswith("("):
            continue
        names.add(m.group(0))
    return names


def matchers(expr: str) -> Iterator[tuple[str, str, str, str]]:
    """(metric, label, operator, value) for each label matcher on a named metric."""
    for m in re.finditer(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", expr):
        for label, op, val in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', m.group(2)):
            yield m.group(1), label, op, val


def all_queries() -> list[tuple[str, str]]:
    """(id, PromQL) of every dashboard target, variable query and alert."""
    out = []
    for name in UIDS:
        dashboard = load(name)
        defined = variables(dashboard)
        for panel, target in targets(dashboard):
            expr = substitute(target["expr"], defined)
            out.append((f"{name}:{panel['title']}:{target['refId']}", expr))
        for var in defined.values():
            if var["type"] == "query":
                q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
                m = re.fullmatch(r"label_values\((.+),\s*\w+\)", q)
                assert m, f"variable {var['name']}: unsupported query {q!r}"
                out.append((f"{name}:${var['name']}", m.group(1)))
    for group in yaml.safe_load((DASHBOARDS / "alerts.yaml").read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            out.append((f"alerts.yaml:{rule.get('alert') or rule['record']}", rule["expr"]))
    return out


QUERIES = all_queries()


# --- provisioning rules


@pytest.mark.parametrize("name", sorted(UIDS))
def test_identity_and_schema(name: str) -> None:
    dashboard = load(name)
    assert dashboard["uid"] == UIDS[name], "the uid is stable: links and alerts use it"
    assert "id" in dashboard and dashboard["id"] is None
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["title"]


@pytest.mark.parametrize("name", sorted(UIDS))
def test_no_import_placeholders(name: str) -> None:
    text = (DASHBOARDS / name).read_text(encoding="utf-8")
    assert "__inputs" not in load(name), "provisioned dashboards cannot use __inputs"
    assert "${DS_" not in text and "$DS_" not in text


@pytest.mark.parametrize("name", sorted(UIDS))
def test_every_panel_and_target_uses_the_datasource_variable(name: str) -> None:
    dashboard = load(name)
    ds = variables(dashboard)["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    checked = 0
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel.get("datasource") == DS_REF, panel["title"]
        assert panel.get("targets"), f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target.get("datasource") == DS_REF, f"{panel['title']} {target['refId']}"
            checked += 1
    for var in variables(dashboard).values():
        if var["type"] == "query":
            assert var["datasource"] == DS_REF, var["name"]
    assert checked >= 6


# The seed's panels keep its 5-minute rolling windows (test_dashboards_seed.py pins them).
SEED_5M = {("clip-overview.json", t) for t in ("Jobs Queued Rate", "Job Latency", "Error Rate")}


@pytest.mark.parametrize("name", sorted(UIDS))
def test_range_windows_follow_grafana(name: str) -> None:
    for panel, target in targets(load(name)):
        expr = target["expr"]
        where = f"{panel['title']}: {expr}"
        windows = re.findall(r"\[([^\]]+)\]", expr)
        if (name, panel["title"]) in SEED_5M:
            assert set(windows) == {"5m"}, where
            continue
        assert set(windows) <= {"$__rate_interval", "$__range", "$__interval"}, where
        for func, window in FUNCTION_WITH_RANGE.findall(expr):
            if func in ("rate", "irate"):
                assert window == "$__rate_interval", where
            if window == "$__interval":  # non-overlapping cells need a floor of 2 scrapes
                assert func == "increase" and target.get("interval"), where
        if "$__range" in expr:  # the whole time range: one value, not a series
            assert target.get("instant") is True and not target.get("range"), where


@pytest.mark.parametrize("name", sorted(UIDS))
def test_panel_ids_unique_and_layout_without_overlap(name: str) -> None:
    dashboard = load(name)
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    boxes: list[tuple[str, dict[str, int]]] = []
    for panel in panels(dashboard):
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, panel["title"]
        for other, o in boxes:
            overlap = (
                g["x"] < o["x"] + o["w"]
                and o["x"] < g["x"] + g["w"]
                and g["y"] < o["y"] + o["h"]
                and o["y"] < g["y"] + g["h"]
            )
            assert not overlap, f"{panel['title']} overlaps {other}"
        boxes.append((panel["title"], g))


@pytest.mark.parametrize("name", sorted(UIDS))
def test_shared_metric_names_are_scoped_to_the_operator_job(name: str) -> None:
    """Every target exposes process_* and has an `up`: without the job they mix."""
    dashboard = load(name)
    job = variables(dashboard)["job"]
    assert job["query"]["query"].startswith("label_values(clip_")
    # An "All" of ".+" would match every target in Prometheus, not the operator's jobs.
    assert job.get("allValue") in (None, ""), "leave allValue unset: All = the listed jobs"
    for panel, target in targets(dashboard):
        for m in re.finditer(r"\b(process_\w+|up)\b(\{[^}]*\})?", target["expr"]):
            assert m.group(2) and 'job=~"$job"' in m.group(2), f"{panel['title']}: {m.group(0)}"


def by_title(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["title"]: p for p in panels(dashboard)}


def red_at(panel: dict[str, Any]) -> float | None:
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return next((s["value"] for s in steps if s["color"] == "red" and s["value"]), None)


def exprs(panel: dict[str, Any]) -> str:
    return "\n".join(t["expr"] for t in panel["targets"])


# The four seed panels are pinned in test_dashboards_seed.py.


def test_overview_rows_for_percentiles_and_worker_phases() -> None:
    dashboard = load("clip-overview.json")
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Latency percentiles", "Worker phases"]
    text = "\n".join(exprs(p) for p in panels(dashboard) if p["type"] != "row")
    assert (
        "histogram_quantile(0.5, sum by (status, le) (rate(clip_job_latency_seconds_bucket" in text
    )
    assert (
        "histogram_quantile(0.95, sum by (status, le) (rate(clip_job_latency_seconds_bucket" in text
    )
    assert "clip_worker_phase_seconds_bucket" in text
    assert "clip_worker_bytes_total" in text


def test_operator_dashboard_covers_reconcile_queue_and_process() -> None:
    dashboard = load("clip-operator.json")
    text = "\n".join(exprs(p) for p in panels(dashboard) if p["type"] != "row")
    for needle in (
        "sum by (handler) (rate(clip_operator_reconcile_total",
        "clip_operator_reconcile_errors_total",
        "histogram_quantile(0.95, sum by (handler, le) "
        "(rate(clip_operator_reconcile_duration_seconds_bucket",
        "clip_jobs_queue_depth",
        "clip_jobs_oldest_inflight_age_seconds",
        "rate(process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert needle in text, needle


# --- PromQL parses (promtool)


def promtool_check(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    rules = [{"record": f"lint:expr_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "lint_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "lint", "rules": rules}]}))
    return subprocess.run(
        [PROMTOOL, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_promtool
@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[q[0] for q in QUERIES])
def test_expression_parses(where: str, expr: str, tmp_path: Path) -> None:
    result = promtool_check([expr], tmp_path)
    assert result.returncode == 0, f"{where}: {expr}\n{result.stdout}{result.stderr}"


@needs_promtool
def test_parse_check_rejects_broken_promql(tmp_path: Path) -> None:
    assert promtool_check(["sum(rate(clip_jobs_queued_total[1m])"], tmp_path).returncode != 0
    assert promtool_check(["rate(clip_jobs_queued_total[$__rate_interval])"], tmp_path).returncode


def test_substitute_knows_builtins_and_rejects_undefined_variables() -> None:
    defined = {"job": {"name": "job", "includeAll": True}}
    assert substitute('rate(x{job=~"$job"}[$__rate_interval])', defined) == (
        'rate(x{job=~".+"}[1m])'
    )
    assert substitute("increase(x[${__range}])", defined) == "increase(x[30m])"
    with pytest.raises(AssertionError, match="undefined variable"):
        substitute('x{namespace="$namespace"}', defined)


# --- metrics exist in the operator's /metrics


def test_metric_names_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (handler, le) (rate(a_bucket{le="1.0"}[1m]))) '
        "/ on (job) group_left b_total offset 5m > bool 1e-09 and absent(up == 1) "
        'or label_replace(c:rec, "dst", "$1", "src", "(.*)")'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "up", "c:rec"}


@pytest.fixture(scope="module")
def exported() -> dict[str, list[dict[str, str]]]:
    """Sample name -> label sets, scraped from a live /metrics of clip_operator.metrics."""
    port = metrics.metrics_server_port()
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        assert metrics.start_metrics_server(port, addr="127.0.0.1")
    # Touch every labelled metric so each of its series appears.
    for status in ("done", "error"):
        metrics.JOB_LATENCY.labels(status).observe(1.0)
    for handler in metrics.HANDLERS:
        with metrics.observe_reconcile(handler):
            pass
        with pytest.raises(ValueError), metrics.observe_reconcile(handler):
            raise ValueError("lint")
    metrics.record_worker_result(
        {
            "sizeBytes": 1,
            "bytesFetched": 1,
            "timings": {
                "downloadSeconds": 1,
                "encodeSeconds": 1,
                "uploadSeconds": 1,
                "totalSeconds": 3,
            },
        }
    )
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    series: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            series.setdefault(sample.name, []).append(dict(sample.labels))
    return series


def test_live_metrics_include_process_metrics(exported: dict[str, list[dict[str, str]]]) -> None:
    assert "process_cpu_seconds_total" in exported
    assert "clip_jobs_queued_total" in exported
    assert "clip_job_latency_seconds_bucket" in exported


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[q[0] for q in QUERIES])
def test_metrics_are_exported(
    where: str, expr: str, exported: dict[str, list[dict[str, str]]]
) -> None:
    names = metric_names(expr)
    assert names, f"{where}: no metric found in {expr}"
    unknown = names - exported.keys() - PROMETHEUS_OWN
    assert not unknown, f"{where}: the operator does not export {sorted(unknown)}"
    for metric, label, op, val in matchers(expr):
        if metric in PROMETHEUS_OWN or label in ("job", "instance", "namespace", "cluster"):
            continue  # target labels, attached by Prometheus (namespace, cluster: by the
            # ServiceMonitor / PodMonitor and a multi-cluster setup's external labels)
        label_sets = exported[metric]
        assert any(label in ls for ls in label_sets), f"{where}: {metric} has no label {label}"
        if op == "=":
            values = sorted({ls[label] for ls in label_sets if label in ls})
            assert val in values, f'{where}: {metric}{{{label}="{val}"}} never exported: {values}'
