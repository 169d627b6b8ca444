"""Worker Pods that exited 0: finish the ClipJob without waiting for the Job controller.

The worker's result is in its container's termination message the moment the container
exits. The Job controller notices the Pod, counts it, and marks the Job `Complete` only a
second or more later (its sync period, then our watch); issue 18 measured 2.3 s from the
container's exit to the URL in status. Watching our worker Pods (label selector, so only
ours) lets the operator act on the exit itself: a Pod of the ClipJob's current Job whose
`clip` container terminated with exit code 0 and a readable result is read as that Job
having completed, with the Pod as its finished Pod. A Job that completes with one
succeeded Pod (completions 1, `podFailurePolicy` only fails on non-zero exits) can end no
other way once that Pod exited 0, so nothing is decided that the Job controller would
later contradict; when it does mark the Job complete, the ClipJob is already terminal and
`decide` only keeps its URL fresh.
"""

from __future__ import annotations

from typing import Any

from .builders import LABEL_CLIPJOB_UID
from .cache import job_finished
from .status import parse_termination_message

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def exited_ok(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The `clip` container's terminated state if it exited 0 with a readable result."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") != "clip":
            continue
        term = (cs.get("state") or {}).get("terminated") or {}
        if term.get("exitCode") == 0 and parse_termination_message(term.get("message")):
            return dict(term)
    return None


def slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """What observe_job reads of a finished worker Pod."""
    meta = pod.get("metadata") or {}
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return {
        "metadata": {"name": meta.get("name"), "labels": dict(meta.get("labels") or {})},
        "status": {"containerStatuses": [cs for cs in statuses if cs.get("name") == "clip"]},
    }


def completed_view(job: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    """The Job as the Job controller will soon write it: Complete at the container's exit."""
    term = exited_ok(pod) or {}
    finished = term.get("finishedAt")
    status = dict(job.get("status") or {})
    status.update(
        active=0,
        ready=0,
        succeeded=max(1, int(status.get("succeeded") or 0)),
        completionTime=status.get("completionTime") or finished,
    )
    complete = {"type": "Complete", "status": "True", "lastTransitionTime": finished}
    status["conditions"] = [*(status.get("conditions") or []), complete]
    return {**job, "status": status}


class ExitedPods:
    """Worker Pods that exited 0, by owner ClipJob uid, until their Job is seen complete."""

    def __init__(self) -> None:
        self.by_owner: dict[str, dict[str, Any]] = {}

    def see(self, kind: str | None, pod: dict[str, Any]) -> str | None:
        """Record a Pod event; the owner uid when it newly shows a successful exit."""
        owner = ((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_CLIPJOB_UID)
        if not owner or kind == "DELETED" or owner in self.by_owner:
            return None
        if exited_ok(pod) is None:
            return None
        self.by_owner[owner] = slim_pod(pod)
        return str(owner)

    def view(self, owner: str, job: dict[str, Any] | None) -> tuple[Any, Any] | None:
        """(completed Job view, [Pod]) when `job` is running and its Pod already exited 0."""
        pod = self.by_owner.get(owner)
        if job is None or pod is None:
            return None
        if job_finished(job):
            return None
        job_name = (job.get("metadata") or {}).get("name")
        if pod["metadata"]["labels"].get(JOB_NAME_LABEL) != job_name:
            return None  # a Pod of an earlier Job of this ClipJob
        return completed_view(job, pod), [pod]

    def forget(self, owner: str) -> None:
        self.by_owner.pop(owner, None)
