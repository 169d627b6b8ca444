"""docs/metrics.md documents every metric the operator defines, and only those; the
per-namespace gauges follow the cluster and drop namespaces that have nothing left.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import re
import sys
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics import MetricWrapperBase

import clip_operator
from clip_operator import metrics, runtime
from clip_operator.cache import job_finished
from tests.unit.test_controller import clipjob, drain, make

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(
    r"^\| `(?P<name>[a-z_:]+)` \| (?P<type>\w+) \|\s*(?P<labels>[^|]*?)\s*\| (?P<meaning>.+) \|$"
)


def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    rows: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in DOC.read_text().splitlines():
        m = ROW.match(line)
        if m:
            assert m["name"] not in rows, f"{m['name']} has two rows"
            assert len(m["meaning"].strip()) > 10, f"{m['name']}: say what it means"
            labels = tuple(re.findall(r"`(\w+)`", m["labels"]))
            rows[m["name"]] = (m["type"], labels)
    return rows


def defined() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every metric object in the operator's modules, by the name /metrics shows."""
    for info in pkgutil.walk_packages(clip_operator.__path__, "clip_operator."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for name, module in list(sys.modules.items()):
        if not name.startswith("clip_operator"):
            continue
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                kind = value._type
                shown = value._name + ("_total" if kind == "counter" else "")
                found[shown] = (kind, tuple(value._labelnames))
    return found


def test_every_metric_has_one_row_and_every_row_a_metric() -> None:
    docs, code = documented(), defined()
    assert len(docs) >= 20, "docs/metrics.md table not found"
    assert sorted(set(code) - set(docs)) == [], "metrics without a row in docs/metrics.md"
    assert sorted(set(docs) - set(code)) == [], "rows in docs/metrics.md without a metric"
    wrong = {n: (docs[n], code[n]) for n in code if docs[n] != code[n]}
    assert not wrong, f"type or labels differ (doc, code): {wrong}"


def test_the_registry_has_no_clip_metric_outside_the_table() -> None:
    defined()  # imports every module
    docs = documented()
    for family in REGISTRY.collect():
        if family.name.startswith("clip_"):
            shown = family.name + ("_total" if family.type == "counter" else "")
            assert shown in docs, f"{shown} is exported but not in docs/metrics.md"


def test_the_seed_names_and_build_info_are_kept() -> None:
    assert {"clip_jobs_queued_total", "clip_jobs_inflight", "clip_job_latency_seconds"} <= set(
        documented()
    )
    text = generate_latest().decode()
    line = next(x for x in text.splitlines() if x.startswith("clip_operator_build_info{"))
    assert line.endswith(" 1.0")
    assert re.search(r'version="[^"]+"', line) and re.search(r'python="3\.\d+', line)


def gauge_lines(name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in generate_latest().decode().splitlines():
        m = re.match(rf'^{name}{{namespace="([^"]*)"}} (\S+)$', line)
        if m:
            out[m[1]] = float(m[2])
    return out


def test_per_namespace_gauges_follow_the_cluster_and_drop_empty_namespaces() -> None:
    def running_by_namespace(ctl: Any) -> dict[str, float]:
        out: dict[str, float] = {}
        for job in ctl.cache.jobs.values():
            if job_finished(job):
                continue
            ns = job["metadata"]["namespace"]
            out[ns] = out.get(ns, 0.0) + 1
        return out

    async def main() -> None:
        ctl, _, _ = make(limit=2)
        names = {"a1": "ns-a", "a2": "ns-a", "b1": "ns-b", "c1": "ns-c"}
        for i, (name, ns) in enumerate(names.items()):
            ctl.clipjob_event("ADDED", clipjob(name, ns, i))
        await drain(ctl)
        runtime.update_gauges(ctl)
        inflight = gauge_lines("clip_jobs_namespace_inflight")
        queued = gauge_lines("clip_jobs_namespace_queued")
        first = running_by_namespace(ctl)
        assert inflight == first and sum(first.values()) == 2, (inflight, first)
        # Queued per namespace: waiting for a slot (no API refusals here). Which ones hold
        # the slots is the admission policy's business; the gauges only have to agree.
        assert queued == {ns: float(n) for ns, n in ctl.admission.waiting_by_namespace().items()}
        assert queued and inflight
        assert sum(inflight.values()) == metrics.JOBS_INFLIGHT._value.get()
        assert sum(queued.values()) == metrics.QUEUE_DEPTH._value.get()

        # The running ones finish and their ClipJobs go; the waiting ones take the slots.
        for uid in [u for u, j in ctl.cache.jobs.items() if not job_finished(j)]:
            job = ctl.cache.jobs[uid]
            job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
            ctl.job_event("MODIFIED", job)
            ctl.clipjob_event("DELETED", clipjob(uid[4:], names[uid[4:]], 0))
        await drain(ctl, rounds=40)
        runtime.update_gauges(ctl)
        inflight = gauge_lines("clip_jobs_namespace_inflight")
        now = running_by_namespace(ctl)
        assert inflight == now, (inflight, now)
        # A namespace with nothing running any more has no series (not a 0 left forever).
        emptied = set(first) - set(now)
        assert emptied, (first, now)
        assert not emptied & set(inflight), (emptied, inflight)
        assert not emptied & set(gauge_lines("clip_jobs_namespace_queued"))

    asyncio.run(main())
