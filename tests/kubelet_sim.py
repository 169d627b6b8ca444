"""Playing the node's part through the API, for the control-plane tier (no kubelet there).

A kubelet reports a Pod's life by writing the Pod's status: phase, the Ready condition
and the container's state (running, then terminated with an exit code and the
termination message). These helpers write exactly those fields with the same
`pods/status` subresource a kubelet uses, so the real Job controller reacts to them as it
would to a real node: counting failures, applying podFailurePolicy, completing the Job.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

CONTAINER = "clip"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_pods(kube: Any, namespace: str, job_name: str) -> list[Any]:
    return list(
        kube.core.list_namespaced_pod(
            namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}"
        ).items
    )


def wait_for_pod(
    kube: Any,
    namespace: str,
    job_name: str,
    *,
    exclude: set[str] | None = None,
    timeout: float = 60,
) -> Any:
    """The first Pod of the Job not in `exclude` (names), waiting for the Job controller."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pod in job_pods(kube, namespace, job_name):
            if pod.metadata.name not in (exclude or set()) and pod.status.phase == "Pending":
                return pod
        time.sleep(0.2)
    raise AssertionError(f"no new Pod for Job {namespace}/{job_name} within {timeout}s")


def start_pod(kube: Any, pod: Any) -> None:
    """Pending -> Running and Ready, as the kubelet reports a started container."""
    now = _now()
    kube.core.patch_namespaced_pod_status(
        pod.metadata.name,
        pod.metadata.namespace,
        {
            "status": {
                "phase": "Running",
                "startTime": now,
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                ],
                "containerStatuses": [
                    {
                        "name": CONTAINER,
                        "image": pod.spec.containers[0].image,
                        "imageID": "",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": now}},
                    }
                ],
            }
        },
    )


def finish_pod(kube: Any, pod: Any, exit_code: int, message: str | dict[str, Any] | None) -> None:
    """Running -> Succeeded/Failed with the container's exit code and termination message."""
    now = _now()
    text = json.dumps(message) if isinstance(message, dict) else message
    terminated: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "startedAt": now,
        "finishedAt": now,
    }
    if text is not None:
        terminated["message"] = text
    kube.core.patch_namespaced_pod_status(
        pod.metadata.name,
        pod.metadata.namespace,
        {
            "status": {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "conditions": [
                    {"type": "ContainersReady", "status": "False", "lastTransitionTime": now},
                    {"type": "Ready", "status": "False", "lastTransitionTime": now},
                ],
                "containerStatuses": [
                    {
                        "name": CONTAINER,
                        "image": pod.spec.containers[0].image,
                        "imageID": "",
                        "ready": False,
                        "started": False,
                        "restartCount": 0,
                        "state": {"terminated": terminated},
                    }
                ],
            }
        },
    )


def run_pod(kube: Any, pod: Any, exit_code: int, message: str | dict[str, Any] | None) -> None:
    start_pod(kube, pod)
    finish_pod(kube, pod, exit_code, message)


def env_of(pod: Any) -> dict[str, str]:
    return {e.name: e.value for e in pod.spec.containers[0].env if e.value is not None}


def success_message(pod: Any, size: int = 1000, duration: float | None = None) -> dict[str, Any]:
    """The result JSON a worker writes, for the bucket/key the operator asked for."""
    env = env_of(pod)
    length = duration if duration is not None else float(env["CLIP_END"]) - float(env["CLIP_START"])
    return {
        "bucket": env["CLIP_S3_BUCKET"],
        "key": env["CLIP_S3_KEY"],
        "sizeBytes": size,
        "durationSeconds": length,
        "width": 640,
        "height": 360,
        "contentType": "video/mp4",
        "cutPath": "smart",
        "bytesFetched": 5000,
        "timings": {
            "downloadSeconds": 0.5,
            "encodeSeconds": 1.0,
            "uploadSeconds": 0.25,
            "totalSeconds": 1.75,
        },
    }


class Kubelet(threading.Thread):
    """A background 'node' that runs every Pending Pod of a namespace to completion.

    `outcome(pod) -> (exit_code, message)` decides each Pod's fate (default: success).
    Bounded: it stops by itself after `max_seconds`.
    """

    def __init__(
        self,
        kube: Any,
        namespace: str,
        outcome: Callable[[Any], tuple[int, Any]] | None = None,
        run_seconds: float = 0.5,
        max_seconds: float = 300,
    ) -> None:
        super().__init__(daemon=True)
        self.kube, self.namespace = kube, namespace
        self.outcome = outcome or (lambda pod: (0, success_message(pod)))
        self.run_seconds, self.max_seconds = run_seconds, max_seconds
        self.stopping = threading.Event()
        self.running: dict[str, float] = {}
        self.finished: set[str] = set()
        self.errors: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                self._step()
            except Exception as exc:  # keep the node alive; tests read self.errors
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.stopping.wait(0.2)

    def _step(self) -> None:
        now = time.monotonic()
        for pod in self.kube.core.list_namespaced_pod(self.namespace).items:
            name = pod.metadata.name
            if name in self.finished or pod.metadata.deletion_timestamp:
                continue
            if pod.status.phase == "Pending" and name not in self.running:
                start_pod(self.kube, pod)
                self.running[name] = now
            elif name in self.running and now - self.running[name] >= self.run_seconds:
                code, message = self.outcome(pod)
                finish_pod(self.kube, pod, code, message)
                self.finished.add(name)
                del self.running[name]

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)
