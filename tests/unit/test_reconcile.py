"""Reconciler decisions that need no cluster (a fake API records what would be written)."""

from __future__ import annotations

import asyncio
from typing import Any

from clip_operator.builders import ClipJobRef
from clip_operator.config import load_config
from clip_operator.models import parse_spec
from clip_operator.reconcile import Reconciler


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> str:
        self.patches.append(status)
        return str(100 + len(self.patches))

    async def list_job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        return []

    async def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        return None


SPEC = {"source": {"url": "http://e.test/v.mp4"}, "start": "0", "end": "10"}


def clipjob(phase: str) -> dict[str, Any]:
    return {
        "apiVersion": "mememaker.io/v1alpha1",
        "kind": "ClipJob",
        "metadata": {
            "name": "a",
            "namespace": "ns",
            "uid": "u1",
            "generation": 1,
            "creationTimestamp": "2026-11-28T10:00:00Z",
            "resourceVersion": "50",
        },
        "spec": SPEC,
        "status": {"phase": phase, "reason": phase, "jobName": "a-clip-1", "observedGeneration": 1},
    }


def job(**status: int) -> dict[str, Any]:
    return {"metadata": {"name": "a-clip-1"}, "status": status}


def follow(body: dict[str, Any], j: dict[str, Any]) -> FakeKube:
    kube = FakeKube()

    async def run() -> None:
        rec = Reconciler(kube, load_config({}), presigner=None)  # type: ignore[arg-type]
        await rec._follow(body, ClipJobRef("a", "ns", "u1"), parse_spec(SPEC), j)

    asyncio.run(run())
    return kube


def test_running_never_falls_back_to_queued_when_the_container_exits() -> None:
    # The container exited (not ready) before the Job controller counted it: still active.
    assert follow(clipjob("Running"), job(active=1, ready=0)).patches == []


def test_running_is_written_when_the_pod_becomes_ready() -> None:
    (patch,) = follow(clipjob("Queued"), job(active=1, ready=1)).patches
    assert patch["phase"] == "Running"


def test_retrying_after_a_transient_failure_is_shown() -> None:
    (patch,) = follow(clipjob("Running"), job(failed=1)).patches
    assert (patch["phase"], patch["reason"]) == ("Queued", "Retrying")
