"""`deletionPolicy: Delete` under faults: the operator killed while finalizing, S3 down
while deleting, and S3 refusing the delete for good (403)."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from tests.faults.ledger import GONE, wait_until
from tests.faults.nodes import SimNode
from tests.faults.servers import connections_to
from tests.faults.steps import (
    delete_clipjob,
    jobs_of,
    new_clipjob,
    object_exists,
    status_of,
    upload_like_worker,
    warning_events,
)
from tests.kubelet_sim import job_pods

pytestmark = pytest.mark.faults


def succeeded_with_object(
    kube: Any, namespace: str, name: str, s3: Any, **spec: Any
) -> tuple[dict[str, Any], str, str]:
    """A ClipJob that Succeeded and whose clip is in S3: (ClipJob, bucket, key)."""
    cj = new_clipjob(kube, namespace, name, deletionPolicy="Delete", **spec)
    node = SimNode(kube, [namespace], outcome=lambda pod: (0, upload_like_worker(pod, s3)))
    node.start()
    try:
        status = wait_until(
            f"{name} Succeeded",
            lambda: (s := status_of(kube, namespace, name)).get("phase") == "Succeeded" and s,
            timeout=60,
        )
    finally:
        node.stop()
    bucket, key = status["output"]["bucket"], status["output"]["key"]
    assert object_exists(s3, bucket, key)
    return cj, bucket, key


def test_operator_killed_during_finalization(
    kube: Any, namespace: str, fault_operator: Any, scenario: Any, stoppable_s3: Any
) -> None:
    sc = scenario("operator SIGKILL during finalization", [namespace])
    store = stoppable_s3.server
    s3 = store.client()
    op = fault_operator([namespace], server=store, bucket="clips")
    cj, bucket, key = succeeded_with_object(kube, namespace, "fin", s3)
    uid = cj["metadata"]["uid"]
    # S3 hangs (SIGSTOP): a call the operator makes to it stays in flight until it is killed.
    before = connections_to(op.proc.pid, stoppable_s3.port)
    stoppable_s3.pause()
    try:
        delete_clipjob(kube, namespace, "fin")
        seen: dict[str, Any] = {}

        def finalizing() -> bool:
            jobs = jobs_of(kube, namespace, uid)
            seen["jobs"] = [(j.metadata.name, bool(j.metadata.deletion_timestamp)) for j in jobs]
            seen["new S3 connections"] = connections_to(op.proc.pid, stoppable_s3.port) - before
            return bool(seen["new S3 connections"]) or any(d for _, d in seen["jobs"])

        try:
            wait_until("the operator finalizing", finalizing, timeout=30, every=0.05)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; seen {seen}") from None
        op.kill(signal.SIGKILL)
        sc.notes.append(
            "killed with "
            + ("an S3 call in flight" if seen["new S3 connections"] else "the Job being deleted")
            + f", Jobs {seen['jobs'] or 'gone'}"
        )
    finally:
        # S3 may still serve the request the dead operator had sent: either way the
        # restarted operator must finish the job.
        stoppable_s3.resume()
    op.start()
    sc.fault_cleared()
    sc.expect(cj, GONE)
    sc.finish(timeout=60)
    assert not object_exists(s3, bucket, key), "the clip outlived its ClipJob"


def test_s3_down_during_deletion_then_back(
    kube: Any, namespace: str, fault_operator: Any, scenario: Any, stoppable_s3: Any
) -> None:
    sc = scenario("S3 down during deletion, then back", [namespace])
    store = stoppable_s3.server
    s3 = store.client()
    fault_operator([namespace], server=store, bucket="clips")
    cj, bucket, key = succeeded_with_object(kube, namespace, "keep", s3)
    uid = cj["metadata"]["uid"]
    stoppable_s3.stop()
    delete_clipjob(kube, namespace, "keep")
    status = wait_until(
        "DeleteFailed while S3 is down",
        lambda: (s := status_of(kube, namespace, "keep")).get("reason") == "DeleteFailed" and s,
        timeout=60,
    )
    assert status.get("message"), status
    wait_until(
        "a Warning Event about the failed delete",
        lambda: warning_events(kube, namespace, uid, "DeleteFailed"),
        timeout=30,
    )
    # Still there, still holding its finalizer, while S3 is away.
    obj = kube.custom.get_namespaced_custom_object(
        "mememaker.io", "v1alpha1", namespace, "clipjobs", "keep"
    )
    assert obj["metadata"].get("finalizers"), obj["metadata"]
    stoppable_s3.start()
    sc.fault_cleared()
    sc.expect(cj, GONE)
    sc.finish(timeout=90)
    assert not object_exists(s3, bucket, key), "the clip outlived its ClipJob"


def test_s3_forbidden_delete_gives_up_at_once(
    kube: Any, namespace: str, fault_operator: Any, scenario: Any, s3_server: Any
) -> None:
    from kubernetes import client

    sc = scenario("S3 delete refused (403): abandoned at once", [namespace])
    s3 = s3_server.client()
    keys = {
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
    }
    kube.core.create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="tenant-s3"), string_data=keys)
    )
    fault_operator([namespace])
    cj, bucket, key = succeeded_with_object(
        kube, namespace, "denied", s3, storage={"secretRef": {"name": "tenant-s3"}}
    )
    uid = cj["metadata"]["uid"]
    # The tenant's keys are rotated wrongly: S3 answers 403 to everything they sign.
    kube.core.patch_namespaced_secret(
        "tenant-s3", namespace, {"stringData": {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}}
    )
    deleted = time.monotonic()
    delete_clipjob(kube, namespace, "denied")
    sc.fault_cleared()
    sc.expect(cj, GONE)
    sc.finish(timeout=20)
    sc.notes.append(f"released {time.monotonic() - deleted:.1f} s after the delete")
    events = wait_until(
        "Warning Event DeleteAbandoned",
        lambda: warning_events(kube, namespace, uid, "DeleteAbandoned"),
        timeout=10,
    )
    assert "SignatureDoesNotMatch" in events[0].message, events[0].message
    assert object_exists(s3, bucket, key), "the object should remain (S3 refused the delete)"


def test_clipjob_deleted_while_its_worker_uploads(
    kube: Any, namespace: str, fault_operator: Any, scenario: Any, s3_server: Any, s3_bucket: str
) -> None:
    """`deletionPolicy: Delete` on a running clip: the worker finishes its upload in its
    termination grace period, so the object may only be deleted once the Job is gone."""
    sc = scenario("ClipJob deleted while its worker uploads", [namespace])
    s3 = s3_server.client()
    node = SimNode(kube, [namespace], on_kill=lambda pod: upload_like_worker(pod, s3))
    node.hold.add("late")
    node.start()
    fault_operator([namespace])
    try:
        cj = new_clipjob(kube, namespace, "late", deletionPolicy="Delete")
        wait_until(
            "the ClipJob Running",
            lambda: status_of(kube, namespace, "late").get("phase") == "Running",
            timeout=30,
        )
        job = jobs_of(kube, namespace, cj["metadata"]["uid"])[0]
        key = next(
            e.value for e in job.spec.template.spec.containers[0].env if e.name == "CLIP_S3_KEY"
        )
        delete_clipjob(kube, namespace, "late")
        sc.fault_cleared()
        sc.expect(cj, GONE)
        sc.finish(timeout=60)
        wait_until(
            "the worker's Pod stopped and gone",
            lambda: node.killed and not job_pods(kube, namespace, job.metadata.name),
            timeout=60,
        )
    finally:
        node.stop()
    assert not object_exists(s3, s3_bucket, key), (
        "the clip the worker uploaded while being stopped outlived its ClipJob: "
        "the object was deleted before the Job was gone"
    )
