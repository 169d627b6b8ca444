"""Dedupe on the real control plane and S3: a second identical ClipJob is served from the
first one's clip without a Job, a twin in flight is waited for, a shared object survives
the deletion of one of its ClipJobs, and namespaces stay apart.

The 'worker' here uploads through the presigned PUTs the operator put into its Pod, as the
real worker does, so S3 checks every signature.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from tests.clipjobs import condition, create, events_for, get, gone, manifest, wait_for
from tests.integration.test_lifecycle_scale import clip_jobs_of, other_namespace  # noqa: F401
from tests.integration.test_operator import job_for, start_with_s3
from tests.kubelet_sim import env_of, run_pod, success_message, wait_for_pod

pytestmark = pytest.mark.integration
CLIP = b"\x00\x00\x00\x18ftypmp42 a clip"


def put(url: str, body: bytes, headers: dict[str, str]) -> None:
    req = urllib.request.Request(url, data=body, method="PUT", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def make_clip(kube: Any, namespace: str, name: str) -> dict[str, Any]:
    """Play the worker of `name`'s Job: upload the clip and its result, then exit 0."""
    job = job_for(kube, namespace, name)
    pod = wait_for_pod(kube, namespace, job.metadata.name)
    env = env_of(pod)
    result = success_message(pod, size=len(CLIP))
    put(env["CLIP_UPLOAD_URL"], CLIP, json.loads(env["CLIP_UPLOAD_HEADERS"]))
    put(env["CLIP_RESULT_URL"], json.dumps(result).encode(), {"Content-Type": "application/json"})
    run_pod(kube, pod, 0, result)
    return result


def ready(kube: Any, namespace: str, name: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get(kube, namespace, name)
        cond = condition(obj, "Ready")
        return obj if cond and cond["status"] == "True" and obj["status"].get("url") else None

    return wait_for(f"{name} Ready with a URL", check, timeout)


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return bytes(resp.read())


def test_identical_clipjobs_share_one_clip_and_one_job(
    kube: Any,
    namespace: str,
    other_namespace: str,  # noqa: F811
    operator_factory: Any,
    s3_server: Any,
    s3_bucket: str,
) -> None:
    operator_factory(
        s3_bucket=s3_bucket,
        s3_endpoint=s3_server.endpoint,
        namespaces=[namespace, other_namespace],
        dedupe="Namespace",
        env={
            "AWS_ACCESS_KEY_ID": s3_server.access_key,
            "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        },
    )
    spec = {"end": "1:07"}
    create(kube, namespace, manifest("first", deletionPolicy="Delete", **spec))
    result = make_clip(kube, namespace, "first")
    first = ready(kube, namespace, "first")["status"]
    assert first["cache"] == "Miss" and "/by-content/" in first["output"]["key"]
    assert first["output"]["key"] == result["key"]

    # A second, identical request (other retries, priority, policy: same bytes).
    started = time.monotonic()
    create(kube, namespace, manifest("again", retries=5, priority=3, **spec))
    again = ready(kube, namespace, "again", timeout=30)
    took = time.monotonic() - started
    status = again["status"]
    assert (status["phase"], status["cache"]) == ("Succeeded", "Hit")
    assert status["output"]["key"] == first["output"]["key"] and "jobName" not in status
    assert download(status["url"]) == CLIP
    assert took < 5, f"a cache hit took {took:.2f} s to be Ready"
    assert len(clip_jobs_of(kube, namespace)) == 1

    # Deleting the first ClipJob (deletionPolicy Delete) keeps the object "again" uses.
    kube.custom.delete_namespaced_custom_object(
        "mememaker.io", "v1alpha1", namespace, "clipjobs", "first"
    )
    wait_for("first deleted", lambda: gone(kube, namespace, "first"))
    assert any(e.reason == "ObjectKept" for e in events_for(kube, namespace, "first"))
    assert download(status["url"]) == CLIP

    # Another namespace does not see this namespace's clips (scope Namespace).
    create(kube, other_namespace, manifest("elsewhere", **spec))
    job_for(kube, other_namespace, "elsewhere")
    assert (get(kube, other_namespace, "elsewhere").get("status") or {}).get("cache") == "Miss"


def test_a_twin_in_flight_is_waited_for_not_made_twice(
    kube: Any, namespace: str, operator_factory: Any, s3_server: Any, s3_bucket: str
) -> None:
    start_with_s3(operator_factory, s3_server, s3_bucket, dedupe="Namespace")
    spec = {"end": "1:05", "output": {"maxHeight": 360}}
    create(kube, namespace, manifest("maker", **spec))
    job_for(kube, namespace, "maker")
    create(kube, namespace, manifest("waiter", **spec))
    wait_for(
        "the twin waits",
        lambda: (
            (get(kube, namespace, "waiter").get("status") or {}).get("reason") == "WaitingForTwin"
        ),
    )
    assert len(clip_jobs_of(kube, namespace)) == 1
    make_clip(kube, namespace, "maker")
    waiter = ready(kube, namespace, "waiter")["status"]
    assert waiter["cache"] == "Hit" and download(waiter["url"]) == CLIP
    assert len(clip_jobs_of(kube, namespace)) == 1
    # Opting out makes a new clip (and a new Job) all the same.
    create(kube, namespace, manifest("fresh", dedupe=False, **spec))
    job_for(kube, namespace, "fresh")
    assert "cache" not in (get(kube, namespace, "fresh").get("status") or {})


def test_the_twin_failing_hands_the_work_to_its_waiter(
    kube: Any, namespace: str, operator_factory: Any, s3_server: Any, s3_bucket: str
) -> None:
    start_with_s3(operator_factory, s3_server, s3_bucket, dedupe="Namespace")
    spec = {"end": "1:03"}
    create(kube, namespace, manifest("doomed", retries=0, **spec))
    job = job_for(kube, namespace, "doomed")
    create(kube, namespace, manifest("heir", **spec))
    wait_for(
        "the twin waits",
        lambda: (
            (get(kube, namespace, "heir").get("status") or {}).get("reason") == "WaitingForTwin"
        ),
    )
    pod = wait_for_pod(kube, namespace, job.metadata.name)
    run_pod(kube, pod, 1, "source unreachable")
    make_clip(kube, namespace, "heir")  # the heir gets its own Job and makes the clip
    assert ready(kube, namespace, "heir")["status"]["cache"] == "Miss"
