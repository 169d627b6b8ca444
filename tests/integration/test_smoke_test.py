"""`clip-operator smoke-test` (the chart's `helm test`) against a real API server.

The CRD accepts the ClipJob it creates; the command reports Ready, Failed and a timeout by
its exit code and deletes its ClipJob in every case. The operator's part is played here by
a thread that writes the status the operator would; the whole path with the real operator,
node and S3 runs in tests/e2e/test_chart_e2e.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

import pytest

from tests.clipjobs import GROUP, PLURAL, VERSION, wait_for

pytestmark = pytest.mark.integration
NOW = "2026-11-30T00:00:00Z"


def smoke(kube: Any, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIP_OPERATOR_")}
    return subprocess.run(
        [sys.executable, "-m", "clip_operator", "smoke-test", f"--namespace={namespace}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "KUBECONFIG": kube.kubeconfig},
        check=False,
    )


def smoke_clipjobs(kube: Any, namespace: str) -> list[dict[str, Any]]:
    items = kube.custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, label_selector="app.kubernetes.io/component=smoke-test"
    )["items"]
    return list(items)


def play_operator(kube: Any, namespace: str, status: dict[str, Any]) -> threading.Thread:
    """Write `status` on the smoke-test ClipJob as soon as it exists."""

    def run() -> None:
        found = wait_for("the smoke-test ClipJob", lambda: smoke_clipjobs(kube, namespace), 30)
        name = found[0]["metadata"]["name"]
        kube.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def condition(kind: str, value: str, reason: str) -> dict[str, str]:
    return {
        "type": kind,
        "status": value,
        "lastTransitionTime": NOW,
        "reason": reason,
        "message": reason,
    }


def test_ready_clipjob_passes_and_is_deleted(kube: Any, namespace: str) -> None:
    status = {
        "phase": "Succeeded",
        "conditions": [condition("Ready", "True", "Succeeded")],
    }
    thread = play_operator(kube, namespace, status)
    proc = smoke(kube, namespace, "--source=https://videos.example/a.mp4", "--timeout=60")
    thread.join(timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "phase Succeeded" in proc.stdout and "Ready: the clip" in proc.stdout
    wait_for("the ClipJob deleted", lambda: not smoke_clipjobs(kube, namespace), 30)


def test_failed_clipjob_fails_with_its_reason(kube: Any, namespace: str) -> None:
    status = {
        "phase": "Failed",
        "reason": "SourceNotFound",
        "message": "the source answered 404",
        "conditions": [condition("Ready", "False", "SourceNotFound")],
    }
    thread = play_operator(kube, namespace, status)
    proc = smoke(kube, namespace, "--source=https://videos.example/gone.mp4", "--timeout=60")
    thread.join(timeout=30)
    assert proc.returncode == 1
    assert "Failed: SourceNotFound: the source answered 404" in proc.stdout
    wait_for("the ClipJob deleted", lambda: not smoke_clipjobs(kube, namespace), 30)


def test_no_operator_times_out_and_keep_leaves_the_clipjob(kube: Any, namespace: str) -> None:
    proc = smoke(kube, namespace, "--source=https://videos.example/a.mp4", "--timeout=3", "--keep")
    assert proc.returncode == 1
    assert "not Ready after 3 s: phase (no status yet)" in proc.stdout
    (left,) = smoke_clipjobs(kube, namespace)
    assert left["spec"]["deletionPolicy"] == "Delete"  # deleting it later removes the clip
    assert (left["spec"]["start"], left["spec"]["end"]) == ("0", "2")
