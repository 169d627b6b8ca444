"""A worker Pod that exited 0 finishes its ClipJob without the Job controller (issue 18).

With the kube-controller-manager stopped right after it created the worker Pod, the Job is
never marked complete; the ClipJob must still reach Succeeded with its URL and result from
the Pod's termination message alone. Before the operator watched Pods it waited for the
Job's Complete condition (2.3 s after the container's exit on the local node).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.faults.control import ControlPlane
from tests.faults.ledger import wait_until
from tests.faults.steps import jobs_of, new_clipjob, status_of
from tests.kubelet_sim import run_pod, success_message, wait_for_pod

pytestmark = pytest.mark.faults


def test_worker_exit_finishes_the_clipjob_while_the_job_controller_is_down(
    kube: Any,
    namespace: str,
    control_plane: ControlPlane,
    fault_operator: Any,
    scenario: Any,
) -> None:
    sc = scenario("worker exit, Job controller down", [namespace])
    fault_operator([namespace])
    cj = new_clipjob(kube, namespace, "early")
    uid = cj["metadata"]["uid"]
    sc.expect(cj, "Succeeded")
    job = wait_until("the Job", lambda: jobs_of(kube, namespace, uid), timeout=30)[0]
    pod = wait_for_pod(kube, namespace, job.metadata.name)
    control_plane.stop("kube-controller-manager")
    try:
        result = success_message(pod, size=4321)
        run_pod(kube, pod, 0, result)
        sc.fault_cleared()  # the clock starts at the container's exit
        exited = time.monotonic()
        lost = sc.wait(timeout=15)
        took = time.monotonic() - exited
        status = status_of(kube, namespace, "early")
        (still,) = jobs_of(kube, namespace, uid)
        conditions = {c.type for c in still.status.conditions or [] if c.status == "True"}
    finally:
        control_plane.start("kube-controller-manager")
    assert not lost, (lost, sc.cluster_state())
    assert "Complete" not in conditions  # the Job controller never saw the exit
    assert status["url"].startswith("http") and status["output"]["sizeBytes"] == 4321
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    print(f"\nSucceeded {took:.2f} s after the worker's exit, Job not complete")
    # When the Job controller catches up, nothing changes and no second Job appears.
    wait_until(
        "the Job complete",
        lambda: any(
            c.type == "Complete" and c.status == "True"
            for c in jobs_of(kube, namespace, uid)[0].status.conditions or []
        ),
        timeout=60,
    )
    assert status_of(kube, namespace, "early")["completionTime"] == status["completionTime"]
    sc.finish(timeout=10)
