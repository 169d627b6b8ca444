"""Progress of long clips: read from the worker's object, written at most when it changes."""

from __future__ import annotations

from typing import Any

from clip_operator.plan import Need, Settings
from tests.unit.test_decide import SPEC, cj, iso, job, run

S = Settings(default_bucket="clips", progress_min_clip_seconds=60)
LONG = {**SPEC, "start": "0", "end": "120"}
REPORT = {"phase": "Encoding", "percent": 40, "updatedAt": iso(-2)}


def running(**extra: Any) -> dict[str, Any]:
    status = {
        "phase": "Running",
        "reason": "Running",
        "message": "the worker is cutting the clip",
        "jobName": "a-clip-1",
        "observedGeneration": 1,
        **extra,
    }
    return cj(status, spec=LONG)


def test_a_long_running_clip_reads_its_progress_and_writes_it_when_it_moves() -> None:
    live = job(active=1, ready=1)
    assert run(running(), live, settings=S).need == Need.PROGRESS
    plan = run(running(), live, settings=S, progress=REPORT)
    assert plan.status is not None and plan.status["progress"] == REPORT
    assert plan.requeue_after is not None and plan.requeue_after <= 10
    # Unchanged since the last write: no write, just the next look in 10 s.
    same = run(running(progress=REPORT), live, settings=S, progress=dict(REPORT))
    assert same.status is None and same.requeue_after == 10


def test_nothing_read_or_garbage_keeps_what_status_has() -> None:
    live = job(active=1, ready=1)
    assert run(running(progress=REPORT), live, settings=S, progress={}).status is None
    junk = {"phase": "Hacking", "percent": 400, "updatedAt": "x" * 500}
    assert run(running(progress=REPORT), live, settings=S, progress=junk).status is None
    assert run(running(), live, settings=S, progress={"percent": True}).status is None


def test_short_clips_and_a_zero_floor_never_look() -> None:
    live = job(active=1, ready=1)
    short = cj({"phase": "Running", "jobName": "a-clip-1"}, spec=SPEC)  # 10 s
    assert run(short, live, settings=S).need is None
    off = Settings(default_bucket="clips")
    assert run(running(), live, settings=off).need is None


def test_finishing_removes_the_progress() -> None:
    from tests.unit.test_decide import RESULT, URL, done, pod

    finished = job(succeeded=1, conditions=[done("Complete")])
    plan = run(running(progress=REPORT), finished, [pod(0, RESULT)], settings=S, url=URL)
    assert plan.status is not None and plan.status["phase"] == "Succeeded"
    assert "progress" in plan.status and plan.status["progress"] is None
