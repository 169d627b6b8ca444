"""`clip-operator run` with CLIP_OPERATOR_LOG_FORMAT=json on a real API server: every line it
writes, from start to SIGTERM (kopf's, the client libraries', ours), is one JSON object, and
its line about a ClipJob names that ClipJob.

The ClipJob line here is the adoption of a Job an earlier operator created but never
recorded (the Job exists, owned by the ClipJob, when the operator starts).
"""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from clip_operator.builders import ClipJobRef, job_name
from tests.clipjobs import create, manifest, wait_for

pytestmark = pytest.mark.integration


def orphan_job(kube: Any, namespace: str, cj: dict[str, Any]) -> str:
    meta = cj["metadata"]
    ref = ClipJobRef(namespace=namespace, name=meta["name"], uid=meta["uid"])
    name = job_name(ref)
    owner = {
        "apiVersion": "mememaker.io/v1alpha1",
        "kind": "ClipJob",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "ownerReferences": [owner]},
        "spec": {
            "suspend": True,  # never runs: only its existence matters
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "clip-job:dev"}],
                }
            },
        },
    }
    kube.batch.create_namespaced_job(namespace, body)
    return name


def test_json_logs_are_one_object_per_line_and_name_the_clipjob(
    kube: Any, namespace: str, operator_factory: Any
) -> None:
    cj = create(kube, namespace, manifest("logged"))
    job = orphan_job(kube, namespace, cj)
    op = operator_factory(log_format="json")

    def adopted() -> list[dict[str, Any]]:
        text = "".join(p.read_text() for p in op.logs if p.exists())
        return [json.loads(line) for line in text.splitlines() if "adopting existing Job" in line]

    (line,) = wait_for("the operator to adopt the Job", adopted, timeout=60)
    assert (line["namespace"], line["name"], line["uid"], line["kind"]) == (
        namespace,
        "logged",
        cj["metadata"]["uid"],
        "ClipJob",
    )
    assert job in line["message"] and line["level"] == "INFO"

    op.kill(signal.SIGTERM)
    text = "".join(p.read_text() for p in op.logs)
    lines = text.splitlines()
    assert len(lines) >= 3, text
    for raw in lines:
        obj = json.loads(raw)  # fails on any line that is not one JSON object
        assert {"time", "level", "logger", "message"} <= obj.keys(), raw
    started = [json.loads(x) for x in lines if "clip-operator started" in x]
    assert started and "uid" not in started[0]
