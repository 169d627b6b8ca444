"""Table tests of the pure decision function: every transition, no cluster, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clip_operator.decide import decide
from clip_operator.plan import FINALIZER, Act, Facts, Need, Plan, Settings

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
SPEC = {"source": {"url": "http://e.test/v.mp4"}, "start": "0", "end": "10"}
S = Settings(default_bucket="clips")


def iso(delta: float = 0) -> str:
    return (NOW + timedelta(seconds=delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def cj(
    status: dict[str, Any] | None = None, spec: dict[str, Any] | None = None, **meta: Any
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "a",
            "namespace": "ns",
            "uid": "u1",
            "generation": 1,
            "creationTimestamp": iso(-60),
            **meta,
        },
        "spec": spec or SPEC,
        "status": status or {},
    }


def job(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "a-clip-1", "uid": "j1"}, "status": status}


def done(kind: str) -> dict[str, Any]:
    return {"type": kind, "status": "True", "lastTransitionTime": iso(-1), "reason": kind}


def pod(
    exit_code: int | None = None, message: str = "", waiting: str | None = None
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if exit_code is not None:
        state["terminated"] = {"exitCode": exit_code, "message": message, "finishedAt": iso(-1)}
    if waiting:
        state["waiting"] = {"reason": waiting, "message": f"{waiting} details"}
    return {
        "metadata": {"name": "a-pod"},
        "status": {"containerStatuses": [{"name": "clip", "state": state}]},
    }


RESULT = '{"key": "ns/a.mp4", "bucket": "clips", "sizeBytes": 5, "durationSeconds": 10.0}'
URL = ("https://s3/x?sig", iso(3600), iso(0))


def run(
    body: dict[str, Any],
    j: dict[str, Any] | None = None,
    pods: list[Any] | None = None,
    settings: Settings = S,
    **facts: Any,
) -> Plan:
    return decide(body, j, pods, Facts(**facts), NOW, settings)


# -- before the Job -----------------------------------------------------------------------


def test_new_clipjob_without_a_slot_asks_for_one_and_shows_waiting_once() -> None:
    plan = run(cj())
    assert Act.REQUEST_SLOT in plan.actions and plan.status is not None
    assert plan.status["phase"] == "Queued" and plan.status["reason"] == "WaitingForSlot"
    # Already shown: no rewrite while it waits (a queue position would cost a write per move).
    again = run(cj({"phase": "Queued", "reason": "WaitingForSlot"}))
    assert again.status is None and Act.REQUEST_SLOT in again.actions


def test_admitted_clipjob_presigns_the_upload_then_creates_its_job() -> None:
    assert run(cj(), admitted=True).need == Need.UPLOAD
    plan = run(cj(), admitted=True, upload_ready=True)
    assert plan.actions == [Act.CREATE_JOB]


def test_missing_secret_fails_at_once_with_its_name() -> None:
    plan = run(cj(), admitted=True, upload_problem=("SecretNotFound", "the Secret 'x' ..."))
    assert plan.status and plan.status["phase"] == "Failed"
    assert plan.status["reason"] == "SecretNotFound" and "'x'" in plan.status["message"]
    assert Act.WITHDRAW in plan.actions and plan.events[0][:2] == ("Warning", "SecretNotFound")


def test_refused_job_create_gives_up_the_slot_shows_why_and_backs_off() -> None:
    plan = run(cj(), admitted=True, upload_ready=True, create_refused=(403, "exceeded quota: q"))
    assert plan.status and plan.status["phase"] == "Queued"
    assert (
        plan.status["reason"] == "JobCreateRefused" and "exceeded quota" in plan.status["message"]
    )
    assert Act.WITHDRAW in plan.actions and plan.rate_limited
    assert plan.events == [("Warning", "JobCreateRefused", plan.status["message"])]


def test_invalid_spec_and_missing_bucket_fail_clearly() -> None:
    bad = run(cj(spec={**SPEC, "end": "0"}))
    assert bad.status and bad.status["reason"] == "InvalidSpec" and "end" in bad.status["message"]
    nob = run(cj(), settings=Settings())
    assert nob.status and "storage.bucket" in nob.status["message"]


def test_delete_policy_adds_the_finalizer_before_anything_else() -> None:
    plan = run(cj(spec={**SPEC, "deletionPolicy": "Delete"}), admitted=True)
    assert plan.actions == [Act.ADD_FINALIZER]


def test_job_conflict_fails() -> None:
    plan = run(cj(), admitted=True, upload_ready=True, job_conflict="a Job named x exists")
    assert plan.status and plan.status["reason"] == "JobConflict"


# -- a Job recorded but gone ----------------------------------------------------------------


def test_lost_job_is_looked_up_then_recovered_from_s3_never_recreated() -> None:
    body = cj({"phase": "Running", "jobName": "a-clip-1", "queuedAt": iso(-50)})
    assert run(body).need == Need.LOOKUP_JOB
    assert run(body, job_absent=True).need == Need.RECOVER
    plan = run(body, job_absent=True, recovered={"key": "ns/a.mp4", "sizeBytes": 5}, url=URL)
    assert plan.status and plan.status["phase"] == "Succeeded"
    assert plan.status["output"]["sizeBytes"] == 5 and plan.status["url"] == URL[0]
    assert Act.CREATE_JOB not in plan.actions and Act.REQUEST_SLOT not in plan.actions


def test_lost_job_without_a_result_in_s3_fails_job_lost() -> None:
    body = cj({"phase": "Running", "jobName": "a-clip-1"})
    plan = run(body, job_absent=True, recovered={})
    assert plan.status and (plan.status["phase"], plan.status["reason"]) == ("Failed", "JobLost")
    assert Act.CREATE_JOB not in plan.actions


# -- following the Job ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "jstatus", "pods", "phase", "reason"),
    [
        ({}, {}, None, "Queued", "Starting"),
        ({"phase": "Queued"}, {"active": 1, "ready": 1}, None, "Running", "Running"),
        ({"phase": "Running"}, {"failed": 1}, None, "Queued", "Retrying"),
        (
            {"phase": "Queued"},
            {"active": 1, "startTime": iso(-30)},
            [pod(waiting="ImagePullBackOff")],
            "Queued",
            "ImagePullBackOff",
        ),
    ],
)
def test_job_progress(
    current: dict[str, Any], jstatus: dict[str, Any], pods: Any, phase: str, reason: str
) -> None:
    plan = run(cj(current), job(**jstatus), pods)
    assert plan.status and (plan.status["phase"], plan.status["reason"]) == (phase, reason)
    assert plan.status["jobName"] == "a-clip-1"


def test_pods_are_checked_once_a_job_waits_too_long() -> None:
    young = run(cj({"phase": "Queued"}), job(active=1, startTime=iso(-1)))
    assert young.need is None and young.requeue_after and young.requeue_after <= 5
    assert run(cj({"phase": "Queued"}), job(active=1, startTime=iso(-30))).need == Need.PODS
    unschedulable = {
        "metadata": {"name": "p"},
        "status": {
            "conditions": [
                {"type": "PodScheduled", "reason": "Unschedulable", "message": "0/1 nodes"}
            ]
        },
    }
    plan = run(cj({"phase": "Queued"}), job(active=1, startTime=iso(-30)), [unschedulable])
    assert (
        plan.status
        and plan.status["reason"] == "Unschedulable"
        and "0/1 nodes" in plan.status["message"]
    )


def test_running_never_falls_back_to_queued_when_the_container_exits() -> None:
    assert run(cj({"phase": "Running"}), job(active=1, ready=0), []).status is None


def test_unchanged_state_writes_nothing() -> None:
    status = {
        "phase": "Running",
        "reason": "Running",
        "message": "the worker is cutting the clip",
        "jobName": "a-clip-1",
        "observedGeneration": 1,
    }
    assert run(cj(status), job(active=1, ready=1)).status is None


def test_finished_job_reads_pods_then_succeeds_with_url_and_ready() -> None:
    finished = job(succeeded=1, conditions=[done("Complete")], startTime=iso(-20))
    assert run(cj({"phase": "Running"}), finished).need == Need.PODS
    assert run(cj({"phase": "Running"}), finished, [pod(0, RESULT)]).need == Need.URL
    plan = run(cj({"phase": "Running"}), finished, [pod(0, RESULT)], url=URL)
    assert plan.status and plan.status["phase"] == "Succeeded" and plan.status["url"] == URL[0]
    ready = {c["type"]: c["status"] for c in plan.status["conditions"]}
    assert ready == {"Ready": "True"} and plan.terminal and plan.requeue_after
    # Refresh planned when a fifth of the life is left: 0.8 h from now.
    assert plan.requeue_after == pytest.approx(3600 * 0.8)


def test_presign_failure_is_not_ready() -> None:
    finished = job(succeeded=1, conditions=[done("Complete")])
    plan = run(cj({"phase": "Running"}), finished, [pod(0, RESULT)], url_error="no credentials")
    assert plan.status and plan.status["phase"] == "Succeeded" and "url" not in plan.status
    ready = {c["type"]: c["status"] for c in plan.status["conditions"]}
    assert ready["Ready"] == "False" and plan.rate_limited


def test_collected_pods_fall_back_to_the_result_object() -> None:
    finished = job(succeeded=1, conditions=[done("Complete")])
    assert run(cj({"phase": "Running"}), finished, []).need == Need.RECOVER
    plan = run(cj({"phase": "Running"}), finished, [], recovered={"sizeBytes": 7}, url=URL)
    assert plan.status and plan.status["output"]["sizeBytes"] == 7


def test_permanent_worker_failure_fails_with_the_worker_reason() -> None:
    failed = job(failed=1, conditions=[{**done("Failed"), "reason": "PodFailurePolicy"}])
    message = '{"reason": "SourceNotFound", "message": "HTTP 404"}'
    plan = run(cj({"phase": "Running"}), failed, [pod(3, message)])
    assert plan.status and (plan.status["phase"], plan.status["reason"]) == (
        "Failed",
        "SourceNotFound",
    )
    assert plan.events[0][:2] == ("Warning", "SourceNotFound")


# -- the URL of a Succeeded ClipJob ----------------------------------------------------------


def succeeded(expires: float, issued: float, ready: bool = True) -> dict[str, Any]:
    cond = [
        {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": iso(-99)}
    ]
    return cj(
        {
            "phase": "Succeeded",
            "output": {"bucket": "b", "key": "k"},
            "url": "u",
            "urlExpiresAt": iso(expires),
            "urlIssuedAt": iso(issued),
            "conditions": cond,
        }
    )


def test_url_is_refreshed_when_a_fifth_of_its_life_is_left() -> None:
    fresh = run(succeeded(3000, -600))
    assert fresh.need is None and fresh.requeue_after == pytest.approx(3000 - 720)
    assert run(succeeded(700, -2900)).need == Need.URL
    plan = run(succeeded(700, -2900), url=URL)
    assert plan.status and plan.status["url"] == URL[0]


def test_url_cut_short_by_credentials_is_refreshed_from_its_own_life() -> None:
    # Issued now, dies in 15 min (the session's end) although 7 days were asked for.
    plan = run(succeeded(900, 0))
    assert plan.requeue_after == pytest.approx(900 * 0.8)


def test_url_policy_none_removes_the_url() -> None:
    plan = run(succeeded(3000, -600), settings=Settings(url_policy="None"))
    assert plan.status == {"url": None, "urlExpiresAt": None, "urlIssuedAt": None}


# -- deletion ----------------------------------------------------------------------------


def deleting(status: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return cj(
        status,
        spec={**SPEC, "deletionPolicy": "Delete"},
        finalizers=[FINALIZER],
        deletionTimestamp=iso(-10),
        **extra,
    )


def test_deletion_stops_a_running_job_in_the_foreground_first() -> None:
    plan = run(deleting(), job(active=1))
    assert plan.actions == [Act.DELETE_JOB] and plan.need is None
    waiting = job(active=1)
    waiting["metadata"]["deletionTimestamp"] = iso(-1)
    assert run(deleting(), waiting).actions == []


def test_deletion_removes_objects_then_the_finalizer() -> None:
    assert run(deleting()).need == Need.DELETE_OBJECTS
    plan = run(deleting(), deleted_objects=True)
    assert Act.REMOVE_FINALIZER in plan.actions and plan.events[0][1] == "ObjectDeleted"


def test_retryable_delete_error_retries_with_backoff_and_says_so_once() -> None:
    plan = run(deleting(), delete_error=("cannot reach the S3 endpoint", True))
    assert plan.rate_limited and Act.REMOVE_FINALIZER not in plan.actions
    assert plan.status and plan.status["reason"] == "DeleteFailed"
    again = run(deleting({"reason": "DeleteFailed"}), delete_error=("x", True))
    assert again.status is None and again.events == []


def test_non_retryable_delete_error_gives_up_at_once() -> None:
    plan = run(deleting(), delete_error=("S3 refused the credentials", False))
    assert Act.REMOVE_FINALIZER in plan.actions
    assert plan.events[0][:2] == ("Warning", "DeleteAbandoned")


def test_retryable_delete_error_gives_up_after_the_limit() -> None:
    body = deleting()
    body["metadata"]["deletionTimestamp"] = iso(-7200)
    plan = run(body, delete_error=("timeout", True))
    assert Act.REMOVE_FINALIZER in plan.actions and plan.events[0][1] == "DeleteAbandoned"


def test_url_policy_secret_puts_the_url_in_a_secret_not_in_status() -> None:
    finished = job(succeeded=1, conditions=[done("Complete")])
    policy = Settings(default_bucket="clips", url_policy="Secret")
    plan = run(cj({"phase": "Running"}), finished, [pod(0, RESULT)], settings=policy, url=URL)
    assert plan.status and "url" not in plan.status
    assert plan.status["urlSecretName"] == "a-clip-url" and plan.url_secret == (URL[0], URL[1])
    refresh = run(succeeded(700, -2900), settings=policy, url=URL)
    assert refresh.status and refresh.status["url"] is None and refresh.url_secret


def test_a_truncated_clip_says_so_in_status() -> None:
    finished = job(succeeded=1, conditions=[done("Complete")])
    result = '{"key": "k", "sizeBytes": 5, "durationSeconds": 0.77, "truncated": true}'
    plan = run(cj({"phase": "Running"}), finished, [pod(0, result)], url=URL)
    assert plan.status and plan.status["output"]["truncated"] is True
    assert plan.status["output"]["durationSeconds"] == 0.77
