"""status.progress of a long clip on the real control plane and S3: the operator presigns a
progress object for the worker, reads what the worker PUTs there and shows it, no more
often than it changes, and drops it when the ClipJob finishes. Short clips get none."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.clipjobs import create, get, gone, manifest, wait_for, wait_phase
from tests.integration.test_dedupe import put
from tests.integration.test_operator import job_for, start_with_s3
from tests.kubelet_sim import env_of, run_pod, start_pod, success_message, wait_for_pod

pytestmark = pytest.mark.integration


def report(url: str, phase: str, percent: int) -> None:
    body = {"phase": phase, "percent": percent, "updatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
    put(url, json.dumps(body).encode(), {"Content-Type": "application/json"})


def test_a_long_clip_shows_the_workers_progress(
    kube: Any, namespace: str, operator_factory: Any, s3_server: Any, s3_bucket: str
) -> None:
    start_with_s3(operator_factory, s3_server, s3_bucket)
    create(kube, namespace, manifest("long", start="0", end="120", deletionPolicy="Delete"))
    create(kube, namespace, manifest("short", start="0", end="10"))
    pod = wait_for_pod(kube, namespace, job_for(kube, namespace, "long").metadata.name)
    env = env_of(pod)
    url = env["CLIP_PROGRESS_URL"]
    assert env["CLIP_PROGRESS_EVERY"] == "5"
    short = wait_for_pod(kube, namespace, job_for(kube, namespace, "short").metadata.name)
    assert "CLIP_PROGRESS_URL" not in env_of(short)
    start_pod(kube, pod)
    wait_phase(kube, namespace, "long", "Running")
    report(url, "Encoding", 45)

    def shown(phase: str) -> Any:
        progress = (get(kube, namespace, "long").get("status") or {}).get("progress") or {}
        return progress if progress.get("phase") == phase else None

    first = wait_for("progress Encoding", lambda: shown("Encoding"), timeout=30)
    assert first["percent"] == 45
    report(url, "Uploading", 90)
    assert wait_for("progress Uploading", lambda: shown("Uploading"), timeout=30)["percent"] == 90
    run_pod(kube, pod, 0, success_message(pod))
    done = wait_phase(kube, namespace, "long", "Succeeded")
    assert "progress" not in done["status"]
    # deletionPolicy Delete removes the progress object with the clip.
    s3 = s3_server.client()
    key = done["status"]["output"]["key"] + ".progress.json"
    assert s3.head_object(Bucket=s3_bucket, Key=key)
    kube.custom.delete_namespaced_custom_object(
        "mememaker.io", "v1alpha1", namespace, "clipjobs", "long"
    )
    wait_for("ClipJob deleted", lambda: gone(kube, namespace, "long"))
    listed = s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    assert key not in [o["Key"] for o in listed]
