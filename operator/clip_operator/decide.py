"""The pure heart of the operator: (ClipJob, Job, Pods, facts, now) -> Plan.

No API calls and no clock reads: everything the decision depends on comes in as
arguments, so every transition is a table test (tests/unit/test_decide.py). When a
decision needs something not yet known (the Job's Pods, a presigned URL, the result
object in S3), the plan says so in `need` and the controller fetches it and asks again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from .builders import job_name, ref_of
from .cache import job_finished
from .lifecycle import deleting, end_of_life, expired, keep_url
from .models import TERMINAL_PHASES, ClipJobSpec, InvalidSpec, Phase, Progress, parse_spec
from .notify import notification_settled, notify_step
from .outcomes import (
    POD_CHECK_AFTER,
    POD_CHECK_EVERY,
    WAITING_REASONS,
    fail,
    finish,
    pod_waiting,
    queued,
)
from .plan import FINALIZER, Act, Facts, Need, Plan, Settings
from .status import (
    STARTING,
    build_conditions,
    now_iso,
    observe_job,
    parse_time,
    true_condition,
)

TWIN_CHECK_EVERY = 30.0  # the twin's end wakes its waiters; this is the safety net


PROGRESS_CHECK_EVERY = 10.0  # a long clip's progress object is read this often


def reported_progress(found: dict[str, Any]) -> dict[str, Any] | None:
    """The worker's progress object checked against status.progress's model, or None."""
    shown = {k: found.get(k) for k in ("phase", "percent", "updatedAt")}
    try:
        return Progress.model_validate(shown).to_kubernetes()
    except ValidationError:
        return None


KUEUE_CHECK_EVERY = 30.0  # Kueue's reason lives on its Workload, which we do not watch


def decide(
    cj: dict[str, Any],
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]] | None,
    facts: Facts,
    now: datetime,
    settings: Settings,
) -> Plan:
    meta = cj["metadata"]
    status = cj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return deleting(cj, job, facts, now, settings)
    phase = status.get("phase")
    if phase in (Phase.SUCCEEDED.value, Phase.FAILED.value):
        return _finished(cj, phase, facts, now, settings)
    try:
        spec = parse_spec(cj.get("spec"))
    except InvalidSpec as exc:
        return fail(cj, "InvalidSpec", str(exc), now)
    bucket = spec.storage.bucket if spec.storage and spec.storage.bucket else None
    if not (bucket or settings.default_bucket):
        return fail(
            cj,
            "InvalidSpec",
            "no bucket: set spec.storage.bucket or the operator's default bucket "
            "(CLIP_OPERATOR_S3_BUCKET / Helm value storage.bucket)",
            now,
        )
    if spec.deletion_policy == "Delete" and FINALIZER not in (meta.get("finalizers") or []):
        return Plan(actions=[Act.ADD_FINALIZER], requeue_after=0)
    if facts.job_conflict:
        return fail(cj, "JobConflict", facts.job_conflict, now)
    if job is None:
        return _without_job(cj, spec, facts, now, settings)
    return _with_job(cj, spec, job, pods, facts, now, settings)


def _finished(
    cj: dict[str, Any], phase: str, facts: Facts, now: datetime, settings: Settings
) -> Plan:
    """A finished ClipJob: keep its URL fresh until its end of life, then delete it."""
    eol = end_of_life(cj, settings, now)
    if eol is not None and now >= eol and notification_settled(cj, settings, now):
        return expired(cj, settings)
    if phase == Phase.SUCCEEDED.value:
        plan = keep_url(cj, facts, now, settings)
    else:
        plan = Plan(actions=[Act.WITHDRAW])
    plan = notify_step(plan, cj, facts, now, settings)
    if eol is not None and plan.need is None:
        left = (eol - now).total_seconds()
        plan.requeue_after = left if plan.requeue_after is None else min(plan.requeue_after, left)
    return plan


# -- before the Job ------------------------------------------------------------------------


def _without_job(
    cj: dict[str, Any], spec: ClipJobSpec, facts: Facts, now: datetime, settings: Settings
) -> Plan:
    status = cj.get("status") or {}
    name = status.get("jobName")
    # The Job's name is recorded before it is created, so a restart can never make a second
    # Job for an attempt: a recorded Job that is gone is looked up, and if it ever existed
    # (it ran, or its Events say so) it is recovered from S3 or fails JobLost. Only a Job
    # whose create never reached the API server is created (again) under that name.
    if name and facts.job_absent is None:
        return Plan(need=Need.LOOKUP_JOB)
    ran = status.get("phase") == Phase.RUNNING.value or int(status.get("attempts") or 0) > 0
    if name and not ran and facts.job_existed is None:
        return Plan(need=Need.JOB_HISTORY)
    if name and (ran or facts.job_existed):
        if facts.recovered is None:
            return Plan(need=Need.RECOVER)
        if facts.recovered:
            fake_job = {"metadata": {"name": status["jobName"]}, "status": {}}
            message = "clip is ready (result recovered from S3: its Job was gone)"
            completed = status.get("completionTime") or now_iso(now)
            return finish(
                cj,
                fake_job,
                Phase.SUCCEEDED,
                "Succeeded",
                message,
                facts.recovered,
                completed,
                now,
                facts,
                settings,
            )
        return fail(
            cj,
            "JobLost",
            f"the Job {name} disappeared before its result was recorded and the "
            "clip is not in S3; recreate the ClipJob to run it again",
            now,
        )
    dedupe = not name and settings.dedupe != "Off" and spec.dedupe
    if dedupe and status.get("cache") != "Miss":
        reused = _reuse(cj, facts, now, settings)
        if reused is not None:
            return reused
    if facts.upload_problem:
        reason, message = facts.upload_problem
        return fail(cj, reason, message, now)
    if not facts.admitted:
        plan = Plan(actions=[Act.REQUEST_SLOT])
        if status.get("reason") not in ("WaitingForSlot", "JobCreateRefused", "Starting"):
            plan.status = queued(cj, "WaitingForSlot", "waiting for a free in-flight slot", now)
            plan.events.append(("Normal", "Queued", "waiting for a free in-flight slot"))
            if dedupe:
                plan.status["cache"] = "Miss"
        return plan
    if facts.create_refused:
        code, message = facts.create_refused
        text = f"the API refused to create the Job (HTTP {code}): {message}; retrying with backoff"
        plan = Plan(actions=[Act.WITHDRAW], rate_limited=True)
        plan.status = queued(cj, "JobCreateRefused", text, now)
        if status.get("reason") != "JobCreateRefused" or status.get("message") != text:
            plan.events.append(("Warning", "JobCreateRefused", text))
        return plan
    if not facts.upload_ready:
        return Plan(need=Need.UPLOAD)
    plan = Plan(actions=[Act.CREATE_JOB], requeue_after=0)
    if not name:  # recorded first (the controller writes it before the create)
        plan.status = queued(cj, "Starting", STARTING, now)
        plan.status["jobName"] = job_name(ref_of(cj))
        if dedupe:
            plan.status["cache"] = "Miss"
    return plan


def _reuse(cj: dict[str, Any], facts: Facts, now: datetime, settings: Settings) -> Plan | None:
    """Dedupe: succeed from an identical clip already in S3, or wait for an identical,
    older ClipJob that is making it. None: nothing to reuse, make it."""
    status = cj.get("status") or {}
    if facts.twin is None:
        return Plan(need=Need.TWIN)
    if facts.recovered is None:
        return Plan(need=Need.RECOVER)  # the content-addressed result object
    if facts.recovered:
        hit = {"metadata": {"name": ""}, "status": {}}
        message = "clip is ready: an identical clip was already made (no Job ran)"
        plan = finish(
            cj,
            hit,
            Phase.SUCCEEDED,
            "Succeeded",
            message,
            facts.recovered,
            now_iso(now),
            now,
            facts,
            settings,
        )
        if plan.status is not None:
            plan.status.pop("jobName", None)
            plan.status["cache"] = "Hit"
        return plan
    if facts.twin:
        text = f"an identical ClipJob ({facts.twin}) is making this clip; waiting for it"
        plan = Plan(actions=[Act.WITHDRAW], requeue_after=TWIN_CHECK_EVERY)
        if status.get("reason") != "WaitingForTwin":
            plan.status = queued(cj, "WaitingForTwin", text, now)
            plan.events.append(("Normal", "WaitingForTwin", text))
        return plan
    return None


# -- following the Job ---------------------------------------------------------------------


def _with_job(
    cj: dict[str, Any],
    spec: ClipJobSpec,
    job: dict[str, Any],
    pods: list[dict[str, Any]] | None,
    facts: Facts,
    now: datetime,
    settings: Settings,
) -> Plan:
    status = cj.get("status") or {}
    st = job.get("status") or {}
    finished = job_finished(job)
    active_not_ready = not finished and int(st.get("active") or 0) > 0 and not st.get("ready")
    requeue: float | None = None
    if finished and pods is None:
        return Plan(need=Need.PODS)
    if active_not_ready and pods is None:
        started = parse_time(st.get("startTime"))
        age = (now - started).total_seconds() if started else POD_CHECK_AFTER
        if age < POD_CHECK_AFTER:
            requeue = POD_CHECK_AFTER - age
        else:
            return Plan(need=Need.PODS)
    obs = observe_job(job, pods or [])
    if obs.phase == Phase.SUCCEEDED and obs.result is None:
        if facts.recovered is None:
            return Plan(need=Need.RECOVER)  # Pods collected: the result object has it
        if facts.recovered:
            completed = obs.completion_time or now_iso(now)
            return finish(
                cj,
                job,
                Phase.SUCCEEDED,
                "Succeeded",
                "clip is ready",
                facts.recovered,
                completed,
                now,
                facts,
                settings,
            )
    if obs.phase in TERMINAL_PHASES:
        completed = obs.completion_time or now_iso(now)
        return finish(
            cj,
            job,
            obs.phase,
            obs.reason,
            obs.message,
            obs.result,
            completed,
            now,
            facts,
            settings,
        )
    reason, message = obs.reason, obs.message
    if true_condition(job, "Suspended") and obs.phase == Phase.QUEUED:
        if facts.kueue is None:
            return Plan(need=Need.KUEUE)
        reason = "WaitingForKueue"
        message = "the Job waits for Kueue to admit it" + (
            f": {facts.kueue}" if facts.kueue else ""
        )
        requeue = KUEUE_CHECK_EVERY
    if active_not_ready and pods is not None:
        waiting = pod_waiting(pods)
        if waiting:
            reason, message = waiting
        requeue = POD_CHECK_EVERY
    if obs.phase == Phase.QUEUED and reason == "Starting" and status.get("phase") == "Running":
        return Plan(requeue_after=requeue)  # exited, not yet counted: never back to Queued
    progress = status.get("progress")
    floor = settings.progress_min_clip_seconds
    if obs.phase == Phase.RUNNING and 0 < floor <= spec.duration_seconds:
        if facts.progress is None:
            return Plan(need=Need.PROGRESS)
        progress = reported_progress(facts.progress) or progress
        requeue = PROGRESS_CHECK_EVERY if requeue is None else min(requeue, PROGRESS_CHECK_EVERY)
    name = job["metadata"]["name"]
    plan = Plan(requeue_after=requeue)
    gen = cj["metadata"].get("generation", 1)
    if (
        status.get("phase") == obs.phase.value
        and status.get("reason") == reason
        and status.get("message") == message
        and status.get("jobName") == name
        and status.get("observedGeneration") == gen
        and status.get("progress") == progress
    ):
        return plan  # only counters moved (attempts, startTime): not worth a write
    desired = queued(cj, reason, message, now) if obs.phase == Phase.QUEUED else {}
    desired.update(
        phase=obs.phase.value,
        observedGeneration=gen,
        jobName=name,
        attempts=obs.attempts,
        queuedAt=status.get("queuedAt") or now_iso(now),
        reason=reason,
        message=message,
        conditions=build_conditions(
            obs.phase, reason, message, gen, status.get("conditions"), now_iso(now)
        ),
    )
    if obs.start_time:
        desired["startTime"] = obs.start_time
    if progress is not None:
        desired["progress"] = progress
    plan.status = desired
    if status.get("phase") != obs.phase.value and obs.phase == Phase.RUNNING:
        plan.events.append(("Normal", "Running", message))
    if reason != status.get("reason") and reason in WAITING_REASONS | {"Unschedulable"}:
        plan.events.append(("Warning", reason, message))
    return plan
