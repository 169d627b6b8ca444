"""A worker Pod that exited 0 is read as its Job's completion (podexit.py), before the Job
controller writes it: the ClipJob succeeds from the Pod's termination message alone."""

from __future__ import annotations

from typing import Any

from clip_operator.decide import decide
from clip_operator.plan import Facts
from clip_operator.podexit import ExitedPods
from tests.unit.test_decide import NOW, RESULT, URL, S, cj, iso, job, pod


def worker(exit_code: int, message: str, job_name: str = "a-clip-1", owner: str = "u1") -> Any:
    p = pod(exit_code, message)
    p["metadata"]["labels"] = {
        "batch.kubernetes.io/job-name": job_name,
        "mememaker.io/clipjob-uid": owner,
    }
    return p


def test_an_exit_0_with_a_result_finishes_the_clipjob_before_the_job_is_complete() -> None:
    exited = ExitedPods()
    assert exited.see("MODIFIED", worker(0, RESULT)) == "u1"
    running = job(active=1, ready=1, startTime=iso(-20))
    view = exited.view("u1", running)
    assert view is not None
    completed, pods = view
    plan = decide(cj({"phase": "Running"}), completed, pods, Facts(url=URL), NOW, S)
    assert plan.status and plan.status["phase"] == "Succeeded" and plan.status["url"] == URL[0]
    assert plan.status["output"]["sizeBytes"] == 5
    assert plan.status["completionTime"] == iso(-1)  # the container's exit
    assert running["status"].get("conditions") is None  # the cached Job is left alone


def test_only_a_successful_exit_of_the_current_job_with_a_result_counts() -> None:
    exited = ExitedPods()
    assert exited.see("MODIFIED", worker(1, RESULT)) is None  # failures: the Job decides
    assert exited.see("MODIFIED", worker(0, "not json")) is None  # no result: wait for the Job
    assert exited.see("DELETED", worker(0, RESULT)) is None
    assert exited.see("MODIFIED", worker(0, RESULT, job_name="a-clip-0")) == "u1"
    assert exited.see("MODIFIED", worker(0, RESULT)) is None  # seen once
    assert exited.view("u1", job(active=1)) is None  # a Pod of an earlier Job
    exited.forget("u1")
    exited.see("MODIFIED", worker(0, RESULT))
    complete = job(succeeded=1, conditions=[{"type": "Complete", "status": "True"}])
    assert exited.view("u1", complete) is None  # the Job controller already caught up
    assert exited.view("u1", None) is None
