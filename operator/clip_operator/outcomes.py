"""The status a plan writes for each outcome: queued, finished (with URL), failed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .lifecycle import with_url
from .models import Phase
from .plan import Act, Facts, Plan, Settings
from .status import build_conditions, now_iso, output_from_result, parse_time, timings_from_result

POD_CHECK_AFTER = 5.0  # seconds a Job may be active without a ready Pod before we look why
POD_CHECK_EVERY = 10.0
WAITING_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
        "RunContainerError",
    }
)


def pod_waiting(pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) of a Pod that cannot start, as the kubelet or scheduler says."""
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "?")
        pst = pod.get("status") or {}
        for cs in pst.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in WAITING_REASONS:
                text = waiting.get("message") or waiting["reason"]
                return waiting["reason"], f"Pod {name} cannot start: {waiting['reason']}: {text}"
        for cond in pst.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
                text = cond.get("message") or "no node fits"
                return "Unschedulable", f"Pod {name} cannot be scheduled: {text}"
    return None


def finish(
    cj: dict[str, Any],
    job: dict[str, Any],
    phase: Phase,
    reason: str,
    message: str,
    result: dict[str, Any] | None,
    completed: str,
    now: datetime,
    facts: Facts,
    settings: Settings,
) -> Plan:
    status = cj.get("status") or {}
    meta = cj["metadata"]
    gen = meta.get("generation", 1)
    desired: dict[str, Any] = {
        "phase": phase.value,
        "observedGeneration": gen,
        "jobName": job["metadata"]["name"],
        "queuedAt": status.get("queuedAt") or now_iso(now),
        "completionTime": completed,
        "reason": reason,
        "message": message,
    }
    if status.get("progress"):
        desired["progress"] = None  # finished: the last progress report says nothing more
    st = job.get("status") or {}
    if st:
        desired["attempts"] = (
            int(st.get("failed") or 0) + int(st.get("succeeded") or 0) + int(st.get("active") or 0)
        )
    if st.get("startTime"):
        desired["startTime"] = st["startTime"]
    desired["timings"] = timings_from_result(
        result,
        parse_time(meta.get("creationTimestamp")),
        parse_time(st.get("startTime")),
        parse_time(completed),
    )
    plan = Plan(actions=[Act.WITHDRAW], terminal=phase, result=result)
    if phase == Phase.SUCCEEDED:
        if result is None:
            desired["message"] = (
                "clip uploaded, but the worker's result was lost; size and duration are unknown"
            )
        desired["output"] = output_from_result(result or {}, "", "")
        ready = Phase.SUCCEEDED
        desired["conditions"] = build_conditions(
            ready, reason, desired["message"], gen, status.get("conditions"), now_iso(now)
        )
        plan.status = desired
        return with_url(plan, cj, facts, now, settings)
    desired["conditions"] = build_conditions(
        phase, reason, message, gen, status.get("conditions"), now_iso(now)
    )
    plan.status = desired
    plan.events.append(("Warning", reason, message))
    return plan


def queued(cj: dict[str, Any], reason: str, message: str, now: datetime) -> dict[str, Any]:
    status = cj.get("status") or {}
    gen = cj["metadata"].get("generation", 1)
    return {
        "phase": Phase.QUEUED.value,
        "observedGeneration": gen,
        "queuedAt": status.get("queuedAt") or now_iso(now),
        "reason": reason,
        "message": message,
        "conditions": build_conditions(
            Phase.QUEUED, reason, message, gen, status.get("conditions"), now_iso(now)
        ),
    }


def fail(cj: dict[str, Any], reason: str, message: str, now: datetime) -> Plan:
    status = cj.get("status") or {}
    gen = cj["metadata"].get("generation", 1)
    desired = {
        "phase": Phase.FAILED.value,
        "observedGeneration": gen,
        "queuedAt": status.get("queuedAt") or now_iso(now),
        "completionTime": status.get("completionTime") or now_iso(now),
        "reason": reason,
        "message": message,
        "conditions": build_conditions(
            Phase.FAILED, reason, message, gen, status.get("conditions"), now_iso(now)
        ),
    }
    return Plan(
        status=desired,
        actions=[Act.WITHDRAW],
        events=[("Warning", reason, message)],
        terminal=Phase.FAILED,
    )
