"""Status transitions from Job and Pod states (what `kubectl get clip` shows)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clip_operator.models import Phase
from clip_operator.status import (
    build_conditions,
    needs_refresh,
    observe_job,
    output_from_result,
    status_changes,
    timings_from_result,
)

T0 = "2026-11-28T10:00:00Z"
RESULT = {
    "bucket": "clips",
    "key": "ns/a-1.mp4",
    "sizeBytes": 1234,
    "durationSeconds": 10.0,
    "width": 1280,
    "height": 720,
    "contentType": "video/mp4",
    "cutPath": "smart",
    "bytesFetched": 999,
    "timings": {"downloadSeconds": 1.5, "encodeSeconds": 2.25, "uploadSeconds": 0.5},
}


def job(*conds: tuple[str, str, str], **counts: int) -> dict[str, Any]:
    return {
        "metadata": {"name": "a-clip-123456"},
        "status": {
            "startTime": T0,
            "conditions": [
                {"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": T0}
                for t, r, m in conds
            ],
            **counts,
        },
    }


def pod(exit_code: int, message: str | None, finished: str = T0) -> dict[str, Any]:
    term: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "finishedAt": finished,
    }
    if message is not None:
        term["message"] = message
    return {"status": {"containerStatuses": [{"name": "clip", "state": {"terminated": term}}]}}


CASES = [
    ("just created", job(), [], Phase.QUEUED, "Starting", None),
    ("pod pending", job(active=1), [], Phase.QUEUED, "Starting", None),
    ("running", job(active=1, ready=1), [], Phase.RUNNING, "Running", None),
    ("retrying", job(failed=1), [], Phase.QUEUED, "Retrying", None),
    (
        "succeeded with message",
        job(("Complete", "", ""), succeeded=1),
        [pod(0, json.dumps(RESULT))],
        Phase.SUCCEEDED,
        "Succeeded",
        "clip is ready",
    ),
    (
        "succeeded, message missing",
        job(("Complete", "", ""), succeeded=1),
        [pod(0, None)],
        Phase.SUCCEEDED,
        "Succeeded",
        "result message was missing",
    ),
    (
        "permanent failure via podFailurePolicy",
        job(("Failed", "PodFailurePolicy", "Container clip exited 3"), failed=1),
        [pod(3, json.dumps({"reason": "SourceNotFound", "message": "HTTP 404 for http://x/v"}))],
        Phase.FAILED,
        "SourceNotFound",
        "HTTP 404 for http://x/v",
    ),
    (
        "backoff limit, last error from worker",
        job(
            ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
            failed=3,
        ),
        [
            pod(
                1,
                json.dumps({"reason": "NetworkError", "message": "timed out"}),
                "2026-11-28T10:00:05Z",
            ),
            pod(
                1,
                json.dumps({"reason": "StorageUnavailable", "message": "S3 down"}),
                "2026-11-28T10:00:09Z",
            ),
        ],
        Phase.FAILED,
        "BackoffLimitExceeded",
        "gave up after 3 attempt(s); last error: StorageUnavailable: S3 down",
    ),
    (
        "backoff limit, log tail instead of JSON",
        job(("Failed", "BackoffLimitExceeded", "x"), failed=1),
        [pod(1, "Traceback (most recent call last):\n boom")],
        Phase.FAILED,
        "BackoffLimitExceeded",
        "worker exited with code 1 (Error); last output: Traceback",
    ),
    (
        "deadline",
        job(
            ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline"),
            failed=1,
        ),
        [],
        Phase.FAILED,
        "DeadlineExceeded",
        "Job was active longer than specified deadline",
    ),
]


@pytest.mark.parametrize(
    ("name", "j", "pods", "phase", "reason", "message"), CASES, ids=[c[0] for c in CASES]
)
def test_observe_job(
    name: str,
    j: dict[str, Any],
    pods: list[dict[str, Any]],
    phase: Phase,
    reason: str,
    message: str | None,
) -> None:
    obs = observe_job(j, pods)
    assert (obs.phase, obs.reason) == (phase, reason)
    if message:
        assert message in obs.message
    if phase == Phase.SUCCEEDED and "missing" not in name:
        assert obs.result == RESULT


def test_attempts_count_every_pod() -> None:
    assert observe_job(job(failed=2, active=1), []).attempts == 3


def test_conditions_follow_kstatus() -> None:
    ok = build_conditions(Phase.SUCCEEDED, "Succeeded", "done", 1, None, T0)
    assert [(c["type"], c["status"]) for c in ok] == [("Ready", "True")]
    failed = build_conditions(Phase.FAILED, "InvalidSpec", "bad", 2, None, T0)
    assert [(c["type"], c["status"]) for c in failed] == [("Ready", "False"), ("Stalled", "True")]
    assert all(c["observedGeneration"] == 2 for c in failed)
    running = build_conditions(Phase.RUNNING, "Running", "", 1, None, T0)
    assert [(c["type"], c["status"]) for c in running] == [
        ("Ready", "False"),
        ("Reconciling", "True"),
    ]


def test_transition_time_kept_while_status_unchanged() -> None:
    first = build_conditions(Phase.QUEUED, "Starting", "", 1, None, T0)
    later = build_conditions(Phase.RUNNING, "Running", "", 1, first, "2026-11-28T10:05:00Z")
    assert later[0]["lastTransitionTime"] == T0  # Ready stayed False
    done = build_conditions(Phase.SUCCEEDED, "Succeeded", "", 1, later, "2026-11-28T10:09:00Z")
    assert done[0]["lastTransitionTime"] == "2026-11-28T10:09:00Z"


def test_output_and_timings_from_result() -> None:
    out = output_from_result(RESULT, "fallback", "k")
    assert out == {
        k: RESULT[k]
        for k in (
            "bucket",
            "key",
            "sizeBytes",
            "durationSeconds",
            "width",
            "height",
            "contentType",
            "cutPath",
        )
    }
    assert output_from_result({"sizeBytes": "big"}, "b", "k") == {"bucket": "b", "key": "k"}
    created = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    t = timings_from_result(
        RESULT, created, created + timedelta(seconds=2), created + timedelta(seconds=9)
    )
    assert t == {
        "queueSeconds": 2.0,
        "totalSeconds": 9.0,
        "downloadSeconds": 1.5,
        "encodeSeconds": 2.25,
        "uploadSeconds": 0.5,
    }


def test_status_changes_is_a_minimal_patch() -> None:
    assert (
        status_changes({"phase": "Running", "jobName": "j"}, {"phase": "Running", "jobName": "j"})
        == {}
    )
    assert status_changes({"phase": "Running"}, {"phase": "Succeeded"}) == {"phase": "Succeeded"}


def test_url_refresh_when_a_fifth_of_its_life_is_left() -> None:
    now = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    assert needs_refresh(None, 3600, 0.2, now)
    assert not needs_refresh("2026-11-28T10:30:00Z", 3600, 0.2, now)
    assert needs_refresh("2026-11-28T10:11:00Z", 3600, 0.2, now)
    assert needs_refresh("2026-11-28T09:59:00Z", 3600, 0.2, now)
