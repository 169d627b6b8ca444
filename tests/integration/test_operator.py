"""The operator against a real kube-apiserver + kube-controller-manager (Job controller, GC).

Pods never run here (no node): tests/kubelet_sim.py writes Pod status as a kubelet would
and the real Job controller reacts.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from tests.clipjobs import (
    condition,
    create,
    events_for,
    get,
    gone,
    manifest,
    wait_for,
    wait_phase,
)
from tests.kubelet_sim import (
    Kubelet,
    job_pods,
    run_pod,
    start_pod,
    success_message,
    wait_for_pod,
)

pytestmark = pytest.mark.integration


def jobs_of(kube: Any, namespace: str) -> list[Any]:
    return list(kube.batch.list_namespaced_job(namespace).items)


def job_for(kube: Any, namespace: str, name: str, timeout: float = 30) -> Any:
    def check() -> Any:
        jobs = [
            j
            for j in jobs_of(kube, namespace)
            if j.metadata.labels.get("mememaker.io/clipjob") == name
        ]
        return jobs[0] if jobs else None

    return wait_for(f"Job of {name}", check, timeout)


def start_with_s3(operator_factory: Any, s3_server: Any, s3_bucket: str, **settings: Any) -> Any:
    """The operator with the real S3 server as its default store and credentials."""
    return operator_factory(
        s3_bucket=s3_bucket,
        s3_endpoint=s3_server.endpoint,
        **settings,
        env={
            "AWS_ACCESS_KEY_ID": s3_server.access_key,
            "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        },
    )


def test_clipjob_gets_exactly_one_owned_job_and_queued_status(
    kube: Any, namespace: str, operator_factory: Any
) -> None:
    operator_factory()
    cj = create(kube, namespace, manifest("one", retries=1, deadlineSeconds=120))
    job = job_for(kube, namespace, "one")
    owner = job.metadata.owner_references[0]
    assert (owner.kind, owner.uid, owner.controller) == ("ClipJob", cj["metadata"]["uid"], True)
    assert job.spec.backoff_limit == 1 and job.spec.active_deadline_seconds == 120
    assert job.spec.template.spec.containers[0].security_context.read_only_root_filesystem
    obj = wait_for(
        "status with jobName",
        lambda: (s := get(kube, namespace, "one")).get("status", {}).get("jobName") and s,
    )
    status = obj["status"]
    assert status["phase"] == "Queued" and status["jobName"] == job.metadata.name
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    ready, reconciling = condition(obj, "Ready"), condition(obj, "Reconciling")
    assert ready and ready["status"] == "False" and ready["observedGeneration"] == 1
    assert reconciling and reconciling["status"] == "True"
    # The Pod starts: Running.
    pod = wait_for_pod(kube, namespace, job.metadata.name)
    start_pod(kube, pod)
    wait_phase(kube, namespace, "one", "Running")
    assert len(jobs_of(kube, namespace)) == 1


def test_success_fills_output_url_and_ready(
    kube: Any, namespace: str, operator_factory: Any, s3_server: Any, s3_bucket: str
) -> None:
    import urllib.request

    start_with_s3(operator_factory, s3_server, s3_bucket)
    create(kube, namespace, manifest("ok", urlExpiresSeconds=600))
    job = job_for(kube, namespace, "ok")
    pod = wait_for_pod(kube, namespace, job.metadata.name)
    result = success_message(pod, size=11)
    s3_server.client().put_object(Bucket=s3_bucket, Key=result["key"], Body=b"clip-bytes!")
    run_pod(kube, pod, 0, result)
    obj = wait_phase(kube, namespace, "ok", "Succeeded")
    status = obj["status"]
    assert status["output"]["key"] == result["key"] and status["output"]["sizeBytes"] == 11
    assert status["output"]["durationSeconds"] == 10.0 and status["output"]["cutPath"] == "smart"
    assert status["timings"]["encodeSeconds"] == 1.0 and "totalSeconds" in status["timings"]
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
    assert condition(obj, "Reconciling") is None and condition(obj, "Stalled") is None
    with urllib.request.urlopen(status["url"], timeout=10) as resp:
        assert resp.read() == b"clip-bytes!"
    assert status["urlExpiresAt"]
    waited = kube.run_kubectl(
        "wait", "--for=condition=Ready", "clipjob/ok", "-n", namespace, "--timeout=20s"
    )
    assert waited.returncode == 0, waited.stderr
    assert any(e.reason == "Succeeded" for e in events_for(kube, namespace, "ok"))


def test_permanent_failure_fails_at_once_with_worker_reason(
    kube: Any, namespace: str, operator_factory: Any
) -> None:
    operator_factory()
    create(kube, namespace, manifest("gone", retries=3))
    job = job_for(kube, namespace, "gone")
    pod = wait_for_pod(kube, namespace, job.metadata.name)
    run_pod(
        kube, pod, 3, {"reason": "SourceNotFound", "message": "HTTP 404 for http://x/video.mp4"}
    )
    obj = wait_phase(kube, namespace, "gone", "Failed")
    assert obj["status"]["reason"] == "SourceNotFound"
    assert "HTTP 404" in obj["status"]["message"]
    assert condition(obj, "Stalled")["status"] == "True"  # type: ignore[index]
    assert len(job_pods(kube, namespace, job.metadata.name)) == 1  # no retry
    wait_for(
        "a Warning Event",
        lambda: [
            e
            for e in events_for(kube, namespace, "gone")
            if e.type == "Warning" and e.reason == "SourceNotFound"
        ],
    )


def test_transient_failures_are_retried_then_backoff_limit(
    kube: Any, namespace: str, operator_factory: Any
) -> None:
    operator_factory()
    create(kube, namespace, manifest("flaky", retries=1))
    job = job_for(kube, namespace, "flaky")
    seen: set[str] = set()
    for attempt in range(2):
        pod = wait_for_pod(kube, namespace, job.metadata.name, exclude=seen, timeout=90)
        seen.add(pod.metadata.name)
        run_pod(kube, pod, 1, {"reason": "NetworkError", "message": f"timeout #{attempt + 1}"})
    obj = wait_phase(kube, namespace, "flaky", "Failed", timeout=90)
    assert obj["status"]["reason"] == "BackoffLimitExceeded"
    assert "NetworkError: timeout #2" in obj["status"]["message"]
    assert obj["status"]["attempts"] == 2


def test_deadline_exceeded(kube: Any, namespace: str, operator_factory: Any) -> None:
    operator_factory()
    create(kube, namespace, manifest("slow", deadlineSeconds=30))
    job = job_for(kube, namespace, "slow")
    start_pod(kube, wait_for_pod(kube, namespace, job.metadata.name))
    obj = wait_phase(kube, namespace, "slow", "Failed", timeout=90)
    assert obj["status"]["reason"] == "DeadlineExceeded"


def test_invalid_spec_fails_clearly_and_others_continue(
    kube: Any, namespace: str, operator_factory: Any
) -> None:
    # No default bucket and none in the spec: admission cannot know the operator's settings.
    operator_factory(s3_bucket="")
    create(kube, namespace, manifest("nobucket"))
    create(kube, namespace, manifest("withbucket", storage={"bucket": "team-clips"}))
    bad = wait_phase(kube, namespace, "nobucket", "Failed")
    assert (
        bad["status"]["reason"] == "InvalidSpec"
        and "spec.storage.bucket" in bad["status"]["message"]
    )
    wait_for(
        "InvalidSpec event",
        lambda: [e for e in events_for(kube, namespace, "nobucket") if e.reason == "InvalidSpec"],
    )
    job = job_for(kube, namespace, "withbucket")
    pod = wait_for_pod(kube, namespace, job.metadata.name)
    run_pod(kube, pod, 0, success_message(pod))
    wait_phase(kube, namespace, "withbucket", "Succeeded")
    assert all(
        j.metadata.labels["mememaker.io/clipjob"] != "nobucket" for j in jobs_of(kube, namespace)
    )


def test_in_flight_limit_holds_and_all_finish(
    kube: Any, namespace: str, operator_factory: Any
) -> None:
    operator_factory(in_flight_limit=2)
    node = Kubelet(kube, namespace, run_seconds=1.0, max_seconds=120)
    node.start()
    names = [f"q{i}" for i in range(6)]
    for name in names:
        create(kube, namespace, manifest(name))
    peak, deadline = 0, time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            active = [
                j
                for j in jobs_of(kube, namespace)
                if not any(
                    c.type in ("Complete", "Failed") and c.status == "True"
                    for c in (j.status.conditions or [])
                )
            ]
            peak = max(peak, len(active))
            phases = [(get(kube, namespace, n).get("status") or {}).get("phase") for n in names]
            if all(p == "Succeeded" for p in phases):
                break
            time.sleep(0.1)
    finally:
        node.stop()
    assert all(
        (get(kube, namespace, n).get("status") or {}).get("phase") == "Succeeded" for n in names
    )
    assert peak <= 2, f"{peak} Jobs ran at once with an in-flight limit of 2"
    assert len(jobs_of(kube, namespace)) == 6
    assert not node.errors, node.errors


def test_delete_removes_job_and_pods_through_gc(
    kube: Any, namespace: str, operator_factory: Any
) -> None:
    operator_factory()
    create(kube, namespace, manifest("bye"))
    job = job_for(kube, namespace, "bye")
    wait_for_pod(kube, namespace, job.metadata.name)
    kube.custom.delete_namespaced_custom_object(
        "mememaker.io", "v1alpha1", namespace, "clipjobs", "bye"
    )
    wait_for("Job gone", lambda: not jobs_of(kube, namespace), timeout=60)
    wait_for(
        "Pods gone",
        lambda: (
            not [
                p
                for p in kube.core.list_namespaced_pod(namespace).items
                if not p.metadata.deletion_timestamp
            ]
        ),
        timeout=60,
    )


def test_delete_policy_removes_the_s3_object(
    kube: Any, namespace: str, operator_factory: Any, s3_server: Any, s3_bucket: str
) -> None:
    start_with_s3(operator_factory, s3_server, s3_bucket)
    create(kube, namespace, manifest("tmp", deletionPolicy="Delete"))
    job = job_for(kube, namespace, "tmp")
    pod = wait_for_pod(kube, namespace, job.metadata.name)
    result = success_message(pod)
    s3 = s3_server.client()
    s3.put_object(Bucket=s3_bucket, Key=result["key"], Body=b"x")
    run_pod(kube, pod, 0, result)
    obj = wait_phase(kube, namespace, "tmp", "Succeeded")
    assert "mememaker.io/delete-s3-object" in obj["metadata"]["finalizers"]
    kube.custom.delete_namespaced_custom_object(
        "mememaker.io", "v1alpha1", namespace, "clipjobs", "tmp"
    )

    wait_for("ClipJob deleted", lambda: gone(kube, namespace, "tmp"), timeout=60)
    listed = s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    assert not [o for o in listed if o["Key"] == result["key"]]


def test_delete_with_unreachable_store_retries_then_is_released(
    kube: Any, namespace: str, operator_factory: Any
) -> None:
    operator_factory(
        s3_endpoint="http://127.0.0.1:9", delete_retry_limit_seconds=8, storage_timeout_seconds=1
    )
    create(kube, namespace, manifest("stuck", deletionPolicy="Delete"))
    job = job_for(kube, namespace, "stuck")
    pod = wait_for_pod(kube, namespace, job.metadata.name)
    run_pod(kube, pod, 0, success_message(pod))
    wait_phase(kube, namespace, "stuck", "Succeeded")
    kube.custom.delete_namespaced_custom_object(
        "mememaker.io", "v1alpha1", namespace, "clipjobs", "stuck"
    )
    obj = wait_for(
        "DeleteFailed reported",
        lambda: (
            (o := get(kube, namespace, "stuck")).get("status", {}).get("reason") == "DeleteFailed"
            and o
        ),
        timeout=30,
    )
    assert "retrying for up to 8 s" in obj["status"]["message"]

    wait_for(
        "finalizer released after the bound", lambda: gone(kube, namespace, "stuck"), timeout=60
    )
    assert any(e.reason == "DeleteAbandoned" for e in events_for(kube, namespace, "stuck"))


def test_operator_killed_at_random_moments_runs_each_clip_once(
    kube: Any, namespace: str, operator_factory: Any
) -> None:
    op = operator_factory(in_flight_limit=5)
    node = Kubelet(kube, namespace, run_seconds=0.5, max_seconds=240)
    node.start()
    names = [f"r{i:02d}" for i in range(20)]
    rng = random.Random(20261128)
    stop = threading.Event()

    def chaos() -> None:
        for _ in range(5):
            if stop.wait(rng.uniform(0.5, 3.0)):
                return
            op.restart()

    killer = threading.Thread(target=chaos, daemon=True)
    killer.start()
    try:
        for name in names:
            create(kube, namespace, manifest(name))
            time.sleep(rng.uniform(0, 0.2))
        killer.join(timeout=120)

        def all_terminal() -> bool:
            phases = [(get(kube, namespace, n).get("status") or {}).get("phase") for n in names]
            return all(p in ("Succeeded", "Failed") for p in phases)

        wait_for("every ClipJob terminal", all_terminal, timeout=180, every=0.5)
    finally:
        stop.set()
        node.stop()
    assert op.starts == 6
    jobs = jobs_of(kube, namespace)
    per_clip: dict[str, int] = {}
    for job in jobs:
        key = job.metadata.labels["mememaker.io/clipjob"]
        per_clip[key] = per_clip.get(key, 0) + 1
    assert per_clip == {n: 1 for n in names}
    assert all((get(kube, namespace, n)["status"]["phase"]) == "Succeeded" for n in names)


def test_unreachable_cluster_is_one_clear_line(tmp_path: Any) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "kubeconfig"
    cfg.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: x}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "current-context: c\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "clip_operator", "run"],
        capture_output=True,
        text=True,
        env={"KUBECONFIG": str(cfg), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Kubernetes API at https://127.0.0.1:9" in lines[0]
    assert "Traceback" not in proc.stderr
