"""Bad input fails at once and says why, instead of waiting out a deadline; a Pod that
cannot start says why in the ClipJob's status."""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults.ledger import wait_until
from tests.faults.steps import jobs_of, new_clipjob, status_of
from tests.kubelet_sim import wait_for_pod

pytestmark = pytest.mark.faults


def test_missing_storage_secret_fails_within_10s_without_a_job(
    kube: Any, namespace: str, fault_operator: Any, scenario: Any
) -> None:
    sc = scenario("missing storage Secret", [namespace])
    fault_operator([namespace])
    sc.fault_cleared()  # the clock starts when the ClipJob is created
    cj = new_clipjob(kube, namespace, "nosecret", storage={"secretRef": {"name": "tenant-s3-typo"}})
    sc.expect(cj, "Failed", reason="SecretNotFound", jobs_allowed=0)
    sc.finish(timeout=10)
    assert "tenant-s3-typo" in status_of(kube, namespace, "nosecret").get("message", "")
    assert not jobs_of(kube, namespace, cj["metadata"]["uid"])


def test_pod_stuck_on_image_pull_says_why_within_30s(
    kube: Any, namespace: str, fault_operator: Any, scenario: Any
) -> None:
    sc = scenario("worker Pod stuck in ImagePullBackOff", [namespace])
    fault_operator([namespace])
    cj = new_clipjob(kube, namespace, "nopull")
    job = wait_until(
        "the Job", lambda: jobs_of(kube, namespace, cj["metadata"]["uid"]), timeout=30
    )[0]
    pod = wait_for_pod(kube, namespace, job.metadata.name)
    image = pod.spec.containers[0].image
    # What a kubelet reports when the image cannot be pulled.
    kube.core.patch_namespaced_pod_status(
        pod.metadata.name,
        namespace,
        {
            "status": {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "name": "clip",
                        "image": image,
                        "imageID": "",
                        "ready": False,
                        "started": False,
                        "restartCount": 0,
                        "state": {
                            "waiting": {
                                "reason": "ImagePullBackOff",
                                "message": f'Back-off pulling image "{image}"',
                            }
                        },
                    }
                ],
            }
        },
    )
    sc.fault_cleared()  # the clock starts when the Pod is stuck
    sc.expect(cj, None, message="ImagePullBackOff")
    sc.finish(timeout=30)
