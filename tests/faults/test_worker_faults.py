"""Faults around the worker: S3 down while it uploads, its Job deleted while the operator
is down (after or before the upload, or right as the operator created it), its Pod
deleted mid-run.

The first two run the real worker (tests/local_node.py runs each Pod's `clip_worker` with
the Pod's environment: it cuts a clip from the media server and PUTs it, and its result,
through the presigned URLs the operator put in the Pod).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.faults.ledger import wait_until
from tests.faults.nodes import ProcessNode, SimNode
from tests.faults.servers import AdmissionWebhook
from tests.faults.steps import (
    PROBE_JOB,
    jobs_of,
    new_clipjob,
    object_exists,
    status_of,
    upload_like_worker,
)
from tests.kubelet_sim import job_pods

pytestmark = pytest.mark.faults

CLIP = {"start": "0:04", "end": "0:06", "output": {"format": "mp4", "mode": "fast"}}


def source(server: Any) -> dict[str, Any]:
    host = server.server_address[0]
    return {"url": f"http://{host}/long_faststart.mp4"}


def the_job(kube: Any, namespace: str, cj: dict[str, Any]) -> Any:
    return wait_until(
        "the ClipJob's Job",
        lambda: jobs_of(kube, namespace, cj["metadata"]["uid"]),
        timeout=30,
    )[0]


def recorded_job(kube: Any, namespace: str, cj: dict[str, Any]) -> Any:
    """The Job, once the ClipJob's status names it (status.jobName: this attempt's Job)."""
    job = the_job(kube, namespace, cj)
    name = cj["metadata"]["name"]
    wait_until(
        "status.jobName",
        lambda: status_of(kube, namespace, name).get("jobName") == job.metadata.name,
        timeout=30,
    )
    return job


def delete_job(kube: Any, namespace: str, job: Any) -> None:
    """Delete the Job as a user would, and wait until it is gone or going."""
    kube.batch.delete_namespaced_job(job.metadata.name, namespace, propagation_policy="Background")

    def going() -> bool:
        left = kube.batch.list_namespaced_job(namespace).items
        return all(
            j.metadata.uid != job.metadata.uid or j.metadata.deletion_timestamp for j in left
        )

    wait_until("the Job deleted", going, timeout=30)


def pod_phases(kube: Any, namespace: str, job: Any) -> list[str]:
    return [p.status.phase for p in job_pods(kube, namespace, job.metadata.name)]


def test_s3_down_during_upload_then_back(
    kube: Any,
    namespace: str,
    fault_operator: Any,
    scenario: Any,
    stoppable_s3: Any,
    source_server: Any,
    tmp_path: Path,
) -> None:
    sc = scenario("S3 down during upload, then back", [namespace])
    store = stoppable_s3.server
    fault_operator([namespace], server=store, bucket="clips")
    node = ProcessNode(kube.kubeconfig, namespace, tmp_path / "node.log").start()
    try:
        stoppable_s3.stop()
        cj = new_clipjob(kube, namespace, "upload", source=source(source_server), **CLIP)
        sc.expect(cj, "Succeeded")
        job = the_job(kube, namespace, cj)
        wait_until(
            "the worker's upload failing (a Pod Failed)",
            lambda: "Failed" in pod_phases(kube, namespace, job),
            timeout=120,
        )
        failed = next(
            p for p in job_pods(kube, namespace, job.metadata.name) if p.status.phase == "Failed"
        )
        term = failed.status.container_statuses[0].state.terminated
        sc.notes.append(f"worker while S3 was down: exit {term.exit_code}, {term.message[:80]}")
        assert term.exit_code == 1 and "StorageUnavailable" in term.message, term
        stoppable_s3.start()
        sc.fault_cleared()
        sc.finish(timeout=120)
    finally:
        node.stop()
    output = status_of(kube, namespace, "upload")["output"]
    head = store.client().head_object(Bucket=output["bucket"], Key=output["key"])
    assert head["ContentLength"] == output["sizeBytes"] > 0


def test_job_deleted_while_operator_down_after_upload(
    kube: Any,
    namespace: str,
    fault_operator: Any,
    scenario: Any,
    s3_server: Any,
    s3_bucket: str,
    source_server: Any,
    tmp_path: Path,
) -> None:
    sc = scenario("Job deleted while operator down, after the upload", [namespace])
    op = fault_operator([namespace])
    cj = new_clipjob(kube, namespace, "uploaded", source=source(source_server), **CLIP)
    sc.expect(cj, "Succeeded")
    job = recorded_job(kube, namespace, cj)
    op.kill(signal.SIGKILL)
    node = ProcessNode(kube.kubeconfig, namespace, tmp_path / "node.log").start()
    try:
        wait_until(
            "the worker done",
            lambda: "Succeeded" in pod_phases(kube, namespace, job),
            timeout=120,
        )
    finally:
        node.stop()
    key = next(e.value for e in job.spec.template.spec.containers[0].env if e.name == "CLIP_S3_KEY")
    s3 = s3_server.client()
    assert object_exists(s3, s3_bucket, key), f"the worker uploaded no clip:\n{node.log_tail()}"
    assert object_exists(s3, s3_bucket, f"{key}.result.json"), "no result object (CONTRACT.md)"
    delete_job(kube, namespace, job)
    op.start()
    sc.fault_cleared()
    sc.finish(timeout=60)
    output = status_of(kube, namespace, "uploaded")["output"]
    head = s3.head_object(Bucket=s3_bucket, Key=key)
    assert output["key"] == key and output["sizeBytes"] == head["ContentLength"]
    assert output.get("durationSeconds"), output


def test_job_deleted_while_operator_down_before_upload(
    kube: Any, namespace: str, fault_operator: Any, scenario: Any
) -> None:
    sc = scenario("Job deleted while operator down, nothing uploaded", [namespace])
    op = fault_operator([namespace])
    cj = new_clipjob(kube, namespace, "lost")
    sc.expect(cj, "Failed", reason="JobLost")
    job = recorded_job(kube, namespace, cj)
    op.kill(signal.SIGKILL)
    delete_job(kube, namespace, job)
    op.start()
    sc.fault_cleared()
    sc.finish(timeout=60)
    message = status_of(kube, namespace, "lost").get("message", "")
    assert job.metadata.name in message or "Job" in message, message


def test_worker_pod_deleted_mid_run(
    kube: Any, namespace: str, fault_operator: Any, scenario: Any, s3_server: Any
) -> None:
    sc = scenario("worker Pod deleted mid-run", [namespace])
    s3 = s3_server.client()
    node = SimNode(kube, [namespace], outcome=lambda pod: (0, upload_like_worker(pod, s3)))
    node.hold.add("podkill")
    node.start()
    fault_operator([namespace])
    try:
        cj = new_clipjob(kube, namespace, "podkill")
        sc.expect(cj, "Succeeded")
        job = the_job(kube, namespace, cj)
        wait_until(
            "the ClipJob Running",
            lambda: status_of(kube, namespace, "podkill").get("phase") == "Running",
            30,
        )
        first = job_pods(kube, namespace, job.metadata.name)[0]
        kube.core.delete_namespaced_pod(first.metadata.name, namespace)
        wait_until(
            "the Job's next Pod",
            lambda: [
                p
                for p in job_pods(kube, namespace, job.metadata.name)
                if p.metadata.name != first.metadata.name
            ],
            timeout=60,
        )
        node.release("podkill")
        sc.fault_cleared()
        sc.finish(timeout=60)
    finally:
        node.stop()
    assert status_of(kube, namespace, "podkill").get("attempts", 0) >= 1


def test_operator_killed_while_creating_the_job_then_job_deleted(
    kube: Any, namespace: str, fault_operator: Any, scenario: Any
) -> None:
    """The narrowest window: the operator dies while its Job create is in the API server.

    An allowing admission webhook SIGSTOPs the operator when the create reaches it (a
    client that hangs up would cancel the create), the Job is stored, and the operator is
    SIGKILLed without ever reading the answer. The Job is then deleted while the operator
    is down: on restart the ClipJob must end JobLost, never get a second Job.
    """
    from kubernetes import client

    sc = scenario("operator SIGKILL during Job create, Job then deleted", [namespace])
    op = fault_operator([namespace])
    hook = AdmissionWebhook(
        allow=True,
        on_request=lambda request: None if request.get("dryRun") else op.pause(),
    )
    hook.start()
    admission = client.AdmissionregistrationV1Api(kube.api)
    name = f"clip-faults-kill-{namespace}"
    admission.create_validating_webhook_configuration(hook.configuration(name, namespace))
    try:

        def in_force() -> bool:
            kube.batch.create_namespaced_job(namespace, PROBE_JOB, dry_run="All")
            return hook.requests > 0

        wait_until("webhook in force", in_force, timeout=30)
        cj = new_clipjob(kube, namespace, "racy")
        sc.expect(cj, "Failed", reason="JobLost")
        job = the_job(kube, namespace, cj)
        op.kill(signal.SIGKILL)
    finally:
        admission.delete_validating_webhook_configuration(name)
        hook.stop()
    sc.notes.append(
        f"status.jobName at the kill: {status_of(kube, namespace, 'racy').get('jobName')}"
    )
    delete_job(kube, namespace, job)
    op.start()
    sc.fault_cleared()
    sc.finish(timeout=60)
