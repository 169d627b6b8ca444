"""The dashboards and alerts on a real Prometheus scraping the real operator.

Prometheus (Debian's /usr/bin/prometheus, started by hack/prometheus.sh on 127.0.0.1 with its
own config and data directory) scrapes the operator every second and evaluates alerts.yaml,
while the operator processes ClipJobs on the local control plane: some succeed, some fail,
some wait for a slot, Job creation is refused for a while (a ValidatingAdmissionPolicy) and the
operator is killed and restarted with Jobs in flight. Then every panel query and every
alert condition is evaluated through Prometheus' HTTP API and must return data, and the
dashboards are rendered to PNG from that data (CLIP_UPDATE_DASHBOARD_PNGS=1 writes them to
docs/dashboards/).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.clipjobs import create, manifest, wait_for, wait_phase
from tests.kubelet_sim import Kubelet, success_message

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO_ROOT / "dashboards"
DASHBOARD_FILES = ("clip-overview.json", "clip-operator.json")
JOB = "clip-operator"
SCRAPE_SECONDS = 1.0
RATE_INTERVAL = "4s"  # Grafana's $__rate_interval for a 1 s scrape and a 1 s step
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

SUCCEED = ("ok-1", "ok-2", "ok-3", "ok-4", "ok-5")
FAIL = ("gone-1", "gone-2")
IN_FLIGHT_LIMIT = 2


@dataclass
class Prometheus:
    url: str

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with _NO_PROXY.open(f"{self.url}{path}?{query}", timeout=30) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{path} {params}: {exc.read().decode(errors='replace')}") from exc
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr} if at is None else {"query": expr, "time": str(at)}
        result: list[dict[str, Any]] = self.api("/api/v1/query", **params)["result"]
        return result

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api(
            "/api/v1/query_range",
            query=expr,
            start=str(start),
            end=str(end),
            step=str(SCRAPE_SECONDS),
        )["result"]
        return result

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_value(
        self, what: str, expr: str, ok: Callable[[float], bool], timeout: float = 60
    ) -> float:
        seen: list[float | None] = []

        def check() -> tuple[float] | None:  # a tuple: 0.0 is a value, not "not yet"
            seen.append(self.scalar(expr))
            value = seen[-1]
            return (value,) if value is not None and ok(value) else None

        try:
            return wait_for(f"Prometheus: {what} ({expr})", check, timeout, every=0.5)[0]
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last values {seen[-5:]}") from None


def run_hack(state: Path, port: int, target: str, command: str) -> None:
    env = {
        **os.environ,
        "CLIP_PROM_STATE": str(state),
        "CLIP_PROM_PORT": str(port),
        "CLIP_PROM_TARGETS": target,
        "CLIP_PROM_JOB": JOB,
    }
    script = REPO_ROOT / "hack" / "prometheus.sh"
    result = subprocess.run(
        ["bash", str(script), command], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"hack/prometheus.sh {command}:\n{result.stderr}"


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[int], Prometheus]]:
    """Start a Prometheus that scrapes 127.0.0.1:<metrics port>; stopped afterwards."""
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not found: apt-get install prometheus")
    from tests.plugins.cluster import free_port

    started: list[tuple[Path, int, str]] = []

    def start(metrics_port: int) -> Prometheus:
        state, port, target = tmp_path / "prometheus", free_port(), f"127.0.0.1:{metrics_port}"
        started.append((state, port, target))
        run_hack(state, port, target, "start")
        return Prometheus(f"http://127.0.0.1:{port}")

    yield start
    for state, port, target in started:
        run_hack(state, port, target, "stop")


class DenyJobCreation:
    """A ValidatingAdmissionPolicy that refuses Job creation in one namespace, until closed."""

    def __init__(self, kube: Any, namespace: str) -> None:
        from kubernetes import client

        self.api = client.AdmissionregistrationV1Api(kube.api)
        self.name = f"{namespace}-deny-jobs"
        self.api.create_validating_admission_policy(
            {
                "metadata": {"name": self.name},
                "spec": {
                    "failurePolicy": "Fail",
                    "matchConstraints": {
                        "resourceRules": [
                            {
                                "apiGroups": ["batch"],
                                "apiVersions": ["v1"],
                                "operations": ["CREATE"],
                                "resources": ["jobs"],
                            }
                        ]
                    },
                    "validations": [
                        {
                            "expression": "false",
                            "message": "Jobs are switched off",
                            "reason": "Forbidden",
                        }
                    ],
                },
            }
        )
        self.api.create_validating_admission_policy_binding(
            {
                "metadata": {"name": self.name},
                "spec": {
                    "policyName": self.name,
                    "validationActions": ["Deny"],
                    "matchResources": {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": namespace}
                        }
                    },
                },
            }
        )
        self.closed = False
        # The policy takes effect once the API server has compiled it.
        probe = {
            "metadata": {"name": "probe"},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "probe"}],
                    }
                }
            },
        }

        def refused() -> bool:
            try:
                kube.batch.create_namespaced_job(namespace, probe, dry_run="All")
            except client.ApiException as exc:
                return bool(exc.status == 403 and self.name in str(exc.body))
            return False

        wait_for("the deny-jobs policy in effect", refused, timeout=30)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.api.delete_validating_admission_policy_binding(self.name)
            self.api.delete_validating_admission_policy(self.name)


@pytest.fixture
def deny_job_creation(kube: Any, namespace: str) -> Iterator[Callable[[], DenyJobCreation]]:
    made: list[DenyJobCreation] = []

    def make() -> DenyJobCreation:
        made.append(DenyJobCreation(kube, namespace))
        return made[-1]

    yield make
    for policy in made:
        policy.close()


def substitute(expr: str, variables: dict[str, str]) -> str:
    return re.sub(
        r"\$\{(\w+)(?::\w+)?\}|\$(\w+)",
        lambda m: variables[m.group(1) or m.group(2)],
        expr,
    )


def as_condition(expr: str) -> str:
    """An alert expression as 0/1 per series: returns data whenever its inputs exist."""
    expr = re.sub(r"(==|!=|>=|<=|>|<)(?!\s*bool)", r"\1 bool", expr)
    return re.sub(r"^\s*absent\((.*)\)\s*$", r"\1", expr, flags=re.S)


def finite(result: list[dict[str, Any]]) -> bool:
    points = [v for s in result for _, v in s.get("values", [s.get("value", [0, "NaN"])])]
    return any(not math.isnan(float(v)) for v in points)


def outcome(pod: Any) -> tuple[int, Any]:
    name = pod.metadata.labels.get("mememaker.io/clipjob", "")
    if name.startswith("gone-"):
        return 3, {"reason": "SourceNotFound", "message": "HTTP 404 for http://127.0.0.1:9/v"}
    return 0, success_message(pod)


def test_dashboards_and_alerts_on_real_prometheus(
    kube: Any,
    namespace: str,
    operator_factory: Any,
    prometheus_for: Callable[[int], Prometheus],
    deny_job_creation: Callable[[], DenyJobCreation],
    tmp_path: Path,
) -> None:
    # Job creation is refused (Forbidden) until the policy goes: counted, shown, retried.
    deny_jobs = deny_job_creation()
    op = operator_factory(in_flight_limit=IN_FLIGHT_LIMIT)
    prom = prometheus_for(op.metrics_port)
    sel = f'{{job="{JOB}"}}'
    prom.wait_value("operator scraped", f"up{sel}", lambda v: v == 1)
    start = time.time()

    for name in SUCCEED + FAIL:
        create(kube, namespace, manifest(name, retries=0))
    total = len(SUCCEED) + len(FAIL)
    prom.wait_value(
        "refused Job creates",
        f'sum(clip_jobs_create_refused_total{{job="{JOB}"}})',
        lambda v: v >= 2,
    )
    prom.wait_value("all ClipJobs queued", f"max(clip_jobs_queue_depth{sel})", lambda v: v == total)
    deny_jobs.close()
    prom.wait_value("Jobs in flight", f"max(clip_jobs_inflight{sel})", lambda v: v == 2)

    # Kill the operator with Jobs in flight: the new process derives the gauge from the
    # cluster, so it reports 2 again instead of starting from 0.
    first_start = prom.scalar(f"process_start_time_seconds{sel}")
    op.restart()
    prom.wait_value(
        "the restarted operator scraped",
        f"process_start_time_seconds{sel}",
        lambda v: v != first_start,
    )
    prom.wait_value(
        "Jobs in flight after restart", f"max(clip_jobs_inflight{sel})", lambda v: v == 2
    )
    prom.wait_value(
        "queue after restart",
        f"max(clip_jobs_queue_depth{sel})",
        lambda v: v == total - IN_FLIGHT_LIMIT,
    )

    kubelet = Kubelet(kube, namespace, outcome=outcome, run_seconds=1.0, max_seconds=240)
    kubelet.start()
    try:
        for name in SUCCEED + FAIL:
            wait_phase(kube, namespace, name, "Failed" if name in FAIL else "Succeeded", 180)
    finally:
        kubelet.stop()
    assert not kubelet.errors, kubelet.errors

    prom.wait_value(
        "a latency for every ClipJob",
        f"sum(clip_job_latency_seconds_count{sel})",
        lambda v: v >= total,
    )
    prom.wait_value("in flight back to 0", f"max(clip_jobs_inflight{sel})", lambda v: v == 0)
    prom.wait_value("queue empty", f"max(clip_jobs_queue_depth{sel})", lambda v: v == 0)
    end = time.time() + 2 * SCRAPE_SECONDS
    time.sleep(2 * SCRAPE_SECONDS)  # let the final state land in a couple more scrapes
    window = f"{int(end - start) + 5}s"

    # The in-flight limit held throughout, and the queue was really used.
    assert prom.scalar(f"max(max_over_time(clip_jobs_inflight{sel}[{window}]))") == 2
    assert prom.scalar(f"max(max_over_time(clip_jobs_queue_depth{sel}[{window}]))") == total

    # Every panel query returns finite data over the run.
    empty: list[str] = []
    for file in DASHBOARD_FILES:
        dashboard = json.loads((DASHBOARDS / file).read_text(encoding="utf-8"))
        variables = {
            "__rate_interval": RATE_INTERVAL,
            "__interval": f"{int(SCRAPE_SECONDS)}s",
            "__range": window,
            "job": JOB,
            "cluster": ".*",  # the dashboards' default, All: no cluster label here
            "namespace": ".*",  # nor a target namespace (a ServiceMonitor would add one)
        }
        for panel in [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]:
            for target in panel.get("targets", []):
                # Grafana's $__interval is at least the target's min interval.
                floor = {"__interval": target["interval"]} if target.get("interval") else {}
                expr = substitute(target["expr"], {**variables, **floor})
                if target.get("instant"):
                    result = prom.query(expr, at=end)
                else:
                    result = prom.query_range(expr, start, end)
                if not finite(result):
                    empty.append(f"{file} / {panel['title']} / {target['refId']}: {expr}")
    assert empty == [], "panels without data:\n" + "\n".join(empty)

    # Every alert condition evaluates on the real series; the rules load and evaluate
    # without error; the 2-in-7 failure ratio has the error-ratio alert pending.
    groups = yaml.safe_load((DASHBOARDS / "alerts.yaml").read_text(encoding="utf-8"))["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        condition = as_condition(rule["expr"])
        assert finite(prom.query_range(condition, start, end)), f"{rule['alert']}: {condition}"
    rules = {r["name"]: r for g in prom.api("/api/v1/rules")["groups"] for r in g["rules"]}
    assert set(rules) == {r["alert"] for g in groups for r in g["rules"]}
    assert {n: r["health"] for n, r in rules.items() if r["health"] != "ok"} == {}
    assert rules["ClipOperatorDown"]["state"] == "inactive"
    assert rules["ClipJobErrorRatioHigh"]["state"] in ("pending", "firing")

    # The dashboards drawn from this data: every panel shows at least one series.
    out = tmp_path / "png"
    out.mkdir()
    can_render = importlib.util.find_spec("matplotlib") is not None
    rendered = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "docs" / "dashboards" / "render.py"),
            "--prometheus",
            prom.url,
            "--start",
            str(start),
            "--end",
            str(end),
            "--out",
            str(out),
            *(str(DASHBOARDS / f) for f in DASHBOARD_FILES),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rendered.returncode == 0 or not can_render, rendered.stderr
    for line in rendered.stdout.splitlines():
        report = json.loads(line)
        assert Path(report["png"]).stat().st_size > 10_000
        assert all(n > 0 for n in report["series"].values()), report
    if os.environ.get("CLIP_UPDATE_DASHBOARD_PNGS"):
        for png in out.glob("*.png"):
            shutil.copy(png, REPO_ROOT / "docs" / "dashboards" / png.name)

    # Exactly one latency per ClipJob, by outcome; the +Inf bucket agrees with the count.
    def by_status(expr: str) -> dict[str, float]:
        return {r["metric"]["status"]: float(r["value"][1]) for r in prom.query(expr, at=end)}

    expected = {"done": float(len(SUCCEED)), "error": float(len(FAIL))}
    assert by_status(f"sum by (status) (clip_job_latency_seconds_count{sel})") == expected
    inf = f'clip_job_latency_seconds_bucket{{job="{JOB}",le="+Inf"}}'
    assert by_status(f"sum by (status) ({inf})") == expected
    assert can_render, "rendering the dashboards needs matplotlib: pip install -e .[dev]"
