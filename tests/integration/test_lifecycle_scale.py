"""Issue 17 on the real control plane: fair admission between namespaces, and ClipJobs
that delete themselves after ttlSecondsAfterFinished (objects included, URL never longer).

No node: tests/kubelet_sim.py plays the kubelet for the Pods the real Job controller makes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.clipjobs import create, events_for, get, gone, manifest, wait_for, wait_phase
from tests.integration.test_operator import job_for, start_with_s3
from tests.kubelet_sim import run_pod, success_message, wait_for_pod

pytestmark = pytest.mark.integration

FLOOD = 500


@pytest.fixture
def other_namespace(kube: Any) -> Iterator[str]:
    from kubernetes import client

    name = f"clip-quiet-{uuid.uuid4().hex[:8]}"
    kube.core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"clip-operator.test": "true"})
        )
    )
    yield name
    kube.core.delete_namespace(name)


def clip_jobs_of(kube: Any, namespace: str) -> list[Any]:
    selector = "app.kubernetes.io/managed-by=clip-operator"
    return list(kube.batch.list_namespaced_job(namespace, label_selector=selector).items)


def test_a_flooded_namespace_does_not_hold_back_another_namespaces_clipjob(
    kube: Any, namespace: str, other_namespace: str, operator_factory: Any
) -> None:
    limit = 4
    op = operator_factory(in_flight_limit=limit, namespaces=[namespace, other_namespace])
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: create(kube, namespace, manifest(f"f{n:03d}")), range(FLOOD)))
    flood_jobs = wait_for(
        f"{limit} Jobs in the flooded namespace",
        lambda: (jobs := clip_jobs_of(kube, namespace)) and len(jobs) == limit and jobs,
        timeout=120,
    )
    wait_for(
        "the whole flood queued",
        lambda: (
            sum(
                1
                for item in kube.custom.list_namespaced_custom_object(
                    "mememaker.io", "v1alpha1", namespace, "clipjobs"
                )["items"]
                if (item.get("status") or {}).get("phase") == "Queued"
            )
            == FLOOD
        ),
        timeout=180,
        every=1,
    )
    create(kube, other_namespace, manifest("single"))
    wait_for(
        "the single ClipJob queued",
        lambda: (
            (get(kube, other_namespace, "single").get("status") or {}).get("reason")
            == "WaitingForSlot"
        ),
    )
    # One slot cycle: one flood Job finishes; the freed slot goes to the other namespace.
    pod = wait_for_pod(kube, namespace, flood_jobs[0].metadata.name)
    run_pod(kube, pod, 0, success_message(pod))
    job_for(kube, other_namespace, "single", timeout=60)
    assert len(clip_jobs_of(kube, namespace)) == limit  # none of the 496 went first
    # And the slot after that goes back to the flood: its oldest waiting ClipJob.
    waiting = [
        ((item["metadata"]["creationTimestamp"], item["metadata"]["name"]))
        for item in kube.custom.list_namespaced_custom_object(
            "mememaker.io", "v1alpha1", namespace, "clipjobs"
        )["items"]
        if (item.get("status") or {}).get("reason") == "WaitingForSlot"
    ]
    pod = wait_for_pod(kube, namespace, flood_jobs[1].metadata.name)
    run_pod(kube, pod, 0, success_message(pod))
    names = wait_for(
        "the next flood Job",
        lambda: (
            (
                jobs := {
                    j.metadata.labels["mememaker.io/clipjob"] for j in clip_jobs_of(kube, namespace)
                }
            )
            and len(jobs) == limit + 1
            and jobs
        ),
        timeout=60,
    )
    assert min(waiting)[1] in names, op.metrics()


def test_per_namespace_cap_and_priority(
    kube: Any, namespace: str, other_namespace: str, operator_factory: Any
) -> None:
    operator_factory(
        in_flight_limit=10,
        namespace_in_flight_limit=1,
        namespace_in_flight_limits=f'{{"{other_namespace}": 2}}',
        namespaces=[namespace, other_namespace],
    )
    create(kube, namespace, manifest("first"))
    first = job_for(kube, namespace, "first")
    create(kube, namespace, manifest("low"))
    create(kube, namespace, manifest("high", priority=100))
    for n in range(3):
        create(kube, other_namespace, manifest(f"o{n}"))
    wait_for(
        "two Jobs in the namespace with the override",
        lambda: len(clip_jobs_of(kube, other_namespace)) == 2,
    )
    wait_for(
        "low and high wait although slots are free globally",
        lambda: all(
            (get(kube, namespace, n).get("status") or {}).get("reason") == "WaitingForSlot"
            for n in ("low", "high")
        ),
    )
    assert len(clip_jobs_of(kube, namespace)) == 1
    pod = wait_for_pod(kube, namespace, first.metadata.name)
    run_pod(kube, pod, 0, success_message(pod))
    job_for(kube, namespace, "high")  # priority first, although created later
    assert (get(kube, namespace, "low").get("status") or {}).get("phase") == "Queued"


def test_a_succeeded_clipjob_deletes_itself_and_its_clip_after_its_ttl(
    kube: Any, namespace: str, operator_factory: Any, s3_server: Any, s3_bucket: str
) -> None:
    start_with_s3(operator_factory, s3_server, s3_bucket)
    ttl = 6
    create(kube, namespace, manifest("brief", deletionPolicy="Delete", ttlSecondsAfterFinished=ttl))
    job = job_for(kube, namespace, "brief")
    pod = wait_for_pod(kube, namespace, job.metadata.name)
    result = success_message(pod)
    s3 = s3_server.client()
    s3.put_object(Bucket=s3_bucket, Key=result["key"], Body=b"clip")
    run_pod(kube, pod, 0, result)
    obj = wait_phase(kube, namespace, "brief", "Succeeded")
    status = obj["status"]
    done = datetime.fromisoformat(status["completionTime"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(status["urlExpiresAt"].replace("Z", "+00:00"))
    assert expires <= done + timedelta(seconds=ttl)  # the URL never outlives the ClipJob
    started = time.monotonic()
    wait_for("ClipJob gone after its TTL", lambda: gone(kube, namespace, "brief"), timeout=60)
    assert time.monotonic() - started < ttl + 30
    listed = s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    assert not [o for o in listed if o["Key"] == result["key"]]
    reasons = {e.reason for e in kube.core.list_namespaced_event(namespace).items}
    assert "Expired" in reasons


def test_the_operator_default_ttl_removes_failed_clipjobs_and_spares_others(
    kube: Any, namespace: str, operator_factory: Any
) -> None:
    operator_factory(clipjob_ttl_seconds_after_finished=3)
    create(kube, namespace, manifest("broken", retries=0))
    create(kube, namespace, manifest("kept", retries=0, ttlSecondsAfterFinished=3600))
    for name in ("broken", "kept"):
        job = job_for(kube, namespace, name)
        pod = wait_for_pod(kube, namespace, job.metadata.name)
        run_pod(kube, pod, 1, "source unreachable")
    wait_phase(kube, namespace, "kept", "Failed")
    wait_for("failed ClipJob expired", lambda: gone(kube, namespace, "broken"), timeout=60)
    assert get(kube, namespace, "kept")["status"]["phase"] == "Failed"
    assert [e for e in events_for(kube, namespace, "broken") if e.reason == "Expired"]


def test_with_kueue_jobs_are_created_suspended_and_run_when_admitted(
    kube: Any, namespace: str, operator_factory: Any
) -> None:
    operator_factory(kueue_queue_name="clips", in_flight_limit=1)
    for n in range(3):
        create(kube, namespace, manifest(f"k{n}"))
    # Our own limit (1) steps aside: Kueue decides, so every ClipJob has its Job at once.
    jobs = wait_for("three suspended Jobs", lambda: len(clip_jobs_of(kube, namespace)) == 3)
    assert jobs
    for job in clip_jobs_of(kube, namespace):
        assert job.spec.suspend is True
        assert job.metadata.labels["kueue.x-k8s.io/queue-name"] == "clips"
    wait_for(
        "ClipJobs say they wait for Kueue",
        lambda: all(
            (get(kube, namespace, f"k{n}").get("status") or {}).get("reason") == "WaitingForKueue"
            for n in range(3)
        ),
    )
    assert not kube.core.list_namespaced_pod(namespace).items  # suspended: no Pods
    # Kueue admits one Job by unsuspending it; the Job controller makes its Pod.
    first = job_for(kube, namespace, "k0")
    kube.batch.patch_namespaced_job(first.metadata.name, namespace, {"spec": {"suspend": False}})
    pod = wait_for_pod(kube, namespace, first.metadata.name)
    run_pod(kube, pod, 0, success_message(pod))
    wait_phase(kube, namespace, "k0", "Succeeded")
    assert (get(kube, namespace, "k1").get("status") or {}).get("reason") == "WaitingForKueue"
