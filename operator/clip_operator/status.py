"""Pure status logic: Job + Pods -> what the ClipJob's status should say.

Kept free of API calls so every transition is a table test (tests/unit/test_status.py).
Conditions follow kstatus: `Ready` always present; `Reconciling` and `Stalled` present
only while true, which is what Flux, Argo CD and `kubectl wait` understand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .models import Phase

MAX_MESSAGE = 1024
STARTING = "the Job is created; waiting for its Pod to start"

# Job condition reasons (batch/v1) that we pass through as the ClipJob's reason.
JOB_FAILURE_REASONS = ("BackoffLimitExceeded", "DeadlineExceeded", "PodFailurePolicy")


def now_iso(now: datetime | None = None) -> str:
    moment = now or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def truncate(text: str, limit: int = MAX_MESSAGE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_termination_message(text: str | None) -> dict[str, Any] | None:
    """The worker's result JSON, or None when the message is absent or is a log tail."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class JobObservation:
    """What the Job and its Pods say, reduced to what the ClipJob shows."""

    phase: Phase
    reason: str
    message: str
    attempts: int = 0
    start_time: str | None = None
    completion_time: str | None = None
    result: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def true_condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The Job's condition `kind` when it is True (None otherwise)."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == "clip":
            term = (cs.get("state") or {}).get("terminated")
            return dict(term) if term else None
    return None


def _latest_terminated(pods: list[dict[str, Any]], exit_zero: bool) -> dict[str, Any] | None:
    found = []
    for pod in pods:
        term = _terminated(pod)
        if term is not None and (term.get("exitCode") == 0) == exit_zero:
            found.append(term)
    found.sort(key=lambda t: t.get("finishedAt") or "")
    return found[-1] if found else None


def _describe_failure(term: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(reason, message) of a failed worker run, from its JSON or its log tail."""
    if term is None:
        return None, None
    result = parse_termination_message(term.get("message"))
    if result and isinstance(result.get("reason"), str):
        return result["reason"], truncate(str(result.get("message") or ""))
    tail = term.get("message") or ""
    code = term.get("exitCode")
    reason = term.get("reason") or "Error"
    text = f"worker exited with code {code} ({reason})"
    if tail:
        text += f"; last output: {truncate(tail, 600)}"
    return None, text


def observe_job(job: dict[str, Any], pods: list[dict[str, Any]]) -> JobObservation:
    """Reduce a Job (and, once it is finished, its Pods) to phase, reason and message."""
    st = job.get("status") or {}
    attempts = (
        int(st.get("failed") or 0) + int(st.get("succeeded") or 0) + int(st.get("active") or 0)
    )
    start = st.get("startTime")
    complete = true_condition(job, "Complete") or true_condition(job, "SuccessCriteriaMet")
    if complete is not None and true_condition(job, "Complete") is not None:
        term = _latest_terminated(pods, exit_zero=True)
        result = parse_termination_message(term.get("message") if term else None)
        if result is None:
            return JobObservation(
                Phase.SUCCEEDED,
                "Succeeded",
                "clip uploaded, but the worker's result message was missing or unreadable; "
                "size and duration are unknown",
                attempts,
                start,
                st.get("completionTime") or complete.get("lastTransitionTime"),
            )
        return JobObservation(
            Phase.SUCCEEDED,
            "Succeeded",
            "clip is ready",
            attempts,
            start,
            st.get("completionTime") or complete.get("lastTransitionTime"),
            result,
        )
    failed = true_condition(job, "Failed")
    if failed is not None:
        job_reason = failed.get("reason") or "Failed"
        worker_reason, worker_message = _describe_failure(_latest_terminated(pods, exit_zero=False))
        finished = failed.get("lastTransitionTime")
        if job_reason == "PodFailurePolicy":
            return JobObservation(
                Phase.FAILED,
                worker_reason or "PermanentFailure",
                worker_message or truncate(failed.get("message") or "worker failed permanently"),
                attempts,
                start,
                finished,
            )
        if job_reason == "BackoffLimitExceeded":
            detail = (
                f"; last error: {worker_reason + ': ' if worker_reason else ''}{worker_message}"
            )
            return JobObservation(
                Phase.FAILED,
                "BackoffLimitExceeded",
                truncate(
                    f"gave up after {attempts} attempt(s)" + (detail if worker_message else "")
                ),
                attempts,
                start,
                finished,
            )
        if job_reason == "DeadlineExceeded":
            return JobObservation(
                Phase.FAILED,
                "DeadlineExceeded",
                truncate(failed.get("message") or "the Job ran longer than spec.deadlineSeconds"),
                attempts,
                start,
                finished,
            )
        return JobObservation(
            Phase.FAILED,
            job_reason,
            truncate(failed.get("message") or "the Job failed"),
            attempts,
            start,
            finished,
        )
    if int(st.get("ready") or 0) > 0:
        return JobObservation(
            Phase.RUNNING, "Running", "the worker is cutting the clip", attempts, start
        )
    if int(st.get("active") or 0) > 0:
        return JobObservation(Phase.QUEUED, "Starting", STARTING, attempts, start)
    if int(st.get("failed") or 0) > 0:
        return JobObservation(
            Phase.QUEUED, "Retrying", "a transient failure is being retried", attempts, start
        )
    return JobObservation(Phase.QUEUED, "Starting", STARTING, attempts, start)


def build_conditions(
    phase: Phase,
    reason: str,
    message: str,
    generation: int,
    previous: list[dict[str, Any]] | None,
    now: str,
) -> list[dict[str, Any]]:
    """kstatus conditions for a phase; lastTransitionTime kept when status is unchanged."""
    old = {c.get("type"): c for c in previous or []}
    wanted: list[tuple[str, str]] = []
    if phase == Phase.SUCCEEDED:
        wanted.append(("Ready", "True"))
    elif phase == Phase.FAILED:
        wanted += [("Ready", "False"), ("Stalled", "True")]
    else:
        wanted += [("Ready", "False"), ("Reconciling", "True")]
    out = []
    for kind, status in wanted:
        prev = old.get(kind)
        since = prev["lastTransitionTime"] if prev and prev.get("status") == status else now
        out.append(
            {
                "type": kind,
                "status": status,
                "observedGeneration": generation,
                "lastTransitionTime": since,
                "reason": reason,
                "message": message,
            }
        )
    return out


_LOUDNESS = ("targetLufs", "integratedLufs", "rangeLu", "truePeakDbtp")
_THUMBNAIL: dict[str, type | tuple[type, ...]] = {
    "key": str, "contentType": str, "width": int, "height": int, "sizeBytes": int,
    "atSeconds": (int, float), "durationSeconds": (int, float),
}  # fmt: skip


def output_from_result(result: dict[str, Any], bucket: str, key: str) -> dict[str, Any]:
    """status.output from the worker's JSON; bucket/key fall back to what we asked for."""
    out: dict[str, Any] = {
        "bucket": result.get("bucket") or bucket,
        "key": result.get("key") or key,
    }
    for name, kind in (
        ("sizeBytes", int),
        ("durationSeconds", float),
        ("width", int),
        ("height", int),
        ("contentType", str),
        ("cutPath", str),
    ):
        value = result.get(name)
        if isinstance(value, bool) or value is None:
            continue
        if kind is float and isinstance(value, int | float):
            out[name] = round(float(value), 3)
        elif isinstance(value, kind):
            out[name] = value
    if result.get("truncated") is True:  # the source ended before `end`: a shorter clip
        out["truncated"] = True
    loudness = result.get("loudness")
    if isinstance(loudness, dict):  # spec.output.loudness: what ebur128 measured
        figures = {
            k: round(float(v), 1)
            for k, v in loudness.items()
            if k in _LOUDNESS and isinstance(v, int | float) and not isinstance(v, bool)
        }
        if figures:
            out["loudness"] = figures
    thumb = result.get("thumbnail")
    if isinstance(thumb, dict) and isinstance(thumb.get("key"), str):  # spec.thumbnail
        out["thumbnail"] = {
            k: thumb[k]
            for k, kind in _THUMBNAIL.items()
            if isinstance(thumb.get(k), kind) and not isinstance(thumb.get(k), bool)
        }
    return out


def timings_from_result(
    result: dict[str, Any] | None,
    created: datetime | None,
    started: datetime | None,
    finished: datetime | None,
) -> dict[str, float]:
    out: dict[str, float] = {}
    if created and started:
        out["queueSeconds"] = round(max(0.0, (started - created).total_seconds()), 3)
    if created and finished:
        out["totalSeconds"] = round(max(0.0, (finished - created).total_seconds()), 3)
    worker = (result or {}).get("timings")
    if isinstance(worker, dict):
        for name in ("downloadSeconds", "encodeSeconds", "uploadSeconds"):
            value = worker.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[name] = round(float(value), 3)
    return out


def status_changes(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The top-level status fields that differ: the merge patch to send (empty = none)."""
    return {k: v for k, v in desired.items() if current.get(k) != v}


def needs_refresh(expires_at: str | None, lifetime: int, fraction: float, now: datetime) -> bool:
    """True when a URL is missing or has less than `fraction` of its lifetime left."""
    moment = parse_time(expires_at)
    if moment is None:
        return True
    return (moment - now).total_seconds() <= lifetime * fraction
