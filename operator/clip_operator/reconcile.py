"""The reconciler: one idempotent function from (ClipJob, Job) to API writes.

Watch events (handlers.py) keep an in-memory copy of every ClipJob and managed Job and
call `Reconciler.reconcile(uid)`. It may run any number of times for the same state and
writes only what differs, so operator restarts and duplicate events are harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from . import metrics
from .builders import (
    LABEL_MANAGED_BY,
    MANAGED_BY,
    ClipJobRef,
    build_job,
    job_name,
    object_key,
    resolve_bucket,
)
from .config import OperatorConfig
from .events import EventPoster
from .kube import Kube
from .models import (
    MAX_URL_EXPIRES_SECONDS,
    TERMINAL_PHASES,
    ClipJobSpec,
    InvalidSpec,
    Phase,
    parse_spec,
)
from .presign import Presigner
from .queue import QueueEntry, admit, position
from .status import (
    build_conditions,
    needs_refresh,
    now_iso,
    observe_job,
    output_from_result,
    parse_time,
    status_changes,
    timings_from_result,
)

log = logging.getLogger("clip_operator")
FINALIZER = "mememaker.io/delete-s3-object"


def ref_of(body: dict[str, Any]) -> ClipJobRef:
    meta = body["metadata"]
    return ClipJobRef(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


def owner_uid(job: dict[str, Any]) -> str | None:
    for ref in (job.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "ClipJob" and ref.get("controller"):
            return str(ref.get("uid"))
    return None


_JOB_META = ("name", "namespace", "uid", "labels", "ownerReferences", "creationTimestamp")


def slim_job(job: dict[str, Any]) -> dict[str, Any]:
    """The parts of a Job the operator reads; the cache holds thousands of them."""
    meta = job.get("metadata") or {}
    return {
        "metadata": {k: meta[k] for k in _JOB_META if k in meta},
        "status": job.get("status") or {},
    }


def slim_clipjob(raw: dict[str, Any]) -> dict[str, Any]:
    """A ClipJob without managedFields (often half its size) for the cache."""
    meta = {k: v for k, v in (raw.get("metadata") or {}).items() if k != "managedFields"}
    return {**raw, "metadata": meta}


def job_finished(job: dict[str, Any]) -> bool:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return True
    return False


@dataclass
class Store:
    """The operator's view of the cluster, fed by watch events."""

    clipjobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # by owner ClipJob uid
    creating: set[str] = field(default_factory=set)  # Jobs being created right now
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def lock(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())

    def in_flight(self) -> int:
        running = sum(1 for j in self.jobs.values() if not job_finished(j))
        return running + len(self.creating - set(self.jobs))

    def waiting(self) -> list[QueueEntry]:
        out = []
        for uid, cj in self.clipjobs.items():
            meta = cj["metadata"]
            phase = (cj.get("status") or {}).get("phase")
            if uid in self.jobs or uid in self.creating or meta.get("deletionTimestamp"):
                continue
            if phase in (Phase.SUCCEEDED.value, Phase.FAILED.value):
                continue
            out.append(QueueEntry(meta["creationTimestamp"], meta["namespace"], meta["name"], uid))
        return out


class Reconciler:
    def __init__(self, kube: Kube, config: OperatorConfig, presigner: Presigner) -> None:
        self.kube = kube
        self.config = config
        self.presigner = presigner
        self.events = EventPoster(kube)
        # resourceVersion of our last write, by uid (stale watch events are ignored)
        self.written_rv: dict[str, int] = {}
        # epoch seconds when each Succeeded ClipJob's URL is due for a refresh
        self.refresh_at: dict[str, float] = {}
        self.announced: set[str] = set()  # ClipJobs whose terminal phase was announced
        self.store = Store()
        self.admission = asyncio.Lock()
        self.wake = asyncio.Event()  # set when a slot frees up or work is waiting
        self.dirty: set[str] = set()  # ClipJobs whose last reconcile failed: retried by the loop

    async def seed(self) -> None:
        """List managed Jobs before the watches start, so the in-flight count is right at once."""
        selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        jobs = await asyncio.to_thread(
            self.kube.list_jobs_sync, selector, self.config.namespaces, slim_job
        )
        for job in jobs:
            owner = owner_uid(job)
            if owner:
                self.store.jobs[owner] = job

    def observe(self, raw: dict[str, Any]) -> bool:
        """Cache a ClipJob from a watch event; False (ignored) if older than our last write.

        Watch events can trail our own patches: applying an older status would undo them
        in the cache and cause duplicate writes. resourceVersions are etcd revisions
        (integers); if one is not, we never ignore anything.
        """
        meta = raw["metadata"]
        uid = meta["uid"]
        written = self.written_rv.get(uid)
        if written is not None:
            try:
                if int(meta.get("resourceVersion") or 0) < written:
                    return False
            except ValueError:
                pass
        self.store.clipjobs[uid] = slim_clipjob(raw)
        return True

    def _remember(self, body: dict[str, Any], rv: str | None) -> None:
        if not rv:
            return
        body["metadata"]["resourceVersion"] = rv
        with contextlib.suppress(ValueError):
            self.written_rv[body["metadata"]["uid"]] = int(rv)

    def forget(self, uid: str) -> None:
        self.announced.discard(uid)
        self.written_rv.pop(uid, None)
        self.refresh_at.pop(uid, None)
        self.store.clipjobs.pop(uid, None)
        self.store.locks.pop(uid, None)
        self.dirty.discard(uid)
        self.wake.set()

    async def reconcile_logged(self, uid: str, handler: str) -> None:
        """reconcile() with metrics; failures are logged and retried by the loop, never lost."""
        try:
            with metrics.observe_reconcile(handler):
                await self.reconcile(uid)
            self.dirty.discard(uid)
        except Exception as exc:
            self.dirty.add(uid)
            body = self.store.clipjobs.get(uid)
            name = f"{body['metadata']['namespace']}/{body['metadata']['name']}" if body else uid
            log.warning("reconciling %s failed (will retry): %s: %s", name, type(exc).__name__, exc)

    async def reconcile(self, uid: str) -> None:
        async with self.store.lock(uid):
            body = self.store.clipjobs.get(uid)
            if body is None:
                return
            if body["metadata"].get("deletionTimestamp"):
                await self._finalize(body)
                return
            await self._reconcile_live(body)

    async def _reconcile_live(self, body: dict[str, Any]) -> None:
        ref = ref_of(body)
        status = body.get("status") or {}
        phase = status.get("phase")
        try:
            spec = parse_spec(body.get("spec"))
        except InvalidSpec as exc:
            if status.get("reason") != "InvalidSpec" or phase != Phase.FAILED.value:
                await self._write(
                    body, self._terminal_status(body, Phase.FAILED, "InvalidSpec", str(exc))
                )
                self._announce(body, Phase.FAILED, "InvalidSpec", str(exc), None)
            return
        if spec.deletion_policy == "Delete" and FINALIZER not in body["metadata"].get(
            "finalizers", []
        ):
            rv = await self.kube.update_finalizers(ref.namespace, ref.name, add=FINALIZER)
            body["metadata"]["finalizers"] = [*body["metadata"].get("finalizers", []), FINALIZER]
            self._remember(body, rv)
        if phase in (Phase.SUCCEEDED.value, Phase.FAILED.value):
            return  # terminal: only the URL refresh of the loop touches it from here on
        job = self.store.jobs.get(ref.uid)
        if job is None:
            await self._start(body, ref, spec)
            return
        await self._follow(body, ref, spec, job)

    # -- starting -------------------------------------------------------------------------

    async def _start(self, body: dict[str, Any], ref: ClipJobRef, spec: ClipJobSpec) -> None:
        if resolve_bucket(spec, self.config) is None:
            msg = (
                "no bucket: set spec.storage.bucket or the operator's default bucket "
                "(CLIP_OPERATOR_S3_BUCKET / Helm value s3.bucket)"
            )
            if await self._write(
                body, self._terminal_status(body, Phase.FAILED, "InvalidSpec", msg)
            ):
                self._announce(body, Phase.FAILED, "InvalidSpec", msg, None)
            return
        waiting: list[QueueEntry] = []
        if self.config.in_flight_limit <= 0:
            admitted = {ref.uid}  # no limit: no queue to consult
            self.store.creating.add(ref.uid)
        else:
            async with self.admission:
                waiting = self.store.waiting()
                in_flight = self.store.in_flight()
                admitted = {e.uid for e in admit(waiting, in_flight, self.config.in_flight_limit)}
                if ref.uid in admitted:
                    self.store.creating.add(ref.uid)
        if ref.uid not in admitted:
            place = position(waiting, ref.uid) or 0
            await self._write_queued(
                body,
                "WaitingForSlot",
                f"waiting for a free slot: {place} in queue "
                f"(in-flight limit {self.config.in_flight_limit})",
            )
            return
        try:
            job = await self._create_or_adopt(body, ref, spec)
        finally:
            self.store.creating.discard(ref.uid)
        if job is not None:
            self.store.jobs.setdefault(ref.uid, slim_job(job))
            await self._follow(body, ref, spec, self.store.jobs[ref.uid])

    async def _create_or_adopt(
        self, body: dict[str, Any], ref: ClipJobRef, spec: ClipJobSpec
    ) -> dict[str, Any] | None:
        manifest = build_job(ref, spec, self.config)
        name = manifest["metadata"]["name"]
        try:
            job = await self.kube.create_job(ref.namespace, manifest)
            self.events.info(body, reason="JobCreated", message=f"created Job {name}")
            if not (body.get("status") or {}).get("queuedAt"):
                metrics.JOBS_QUEUED_TOTAL.inc()
            return job
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = await self.kube.read_job(ref.namespace, name)
        if owner_uid(existing) == ref.uid:
            log.info("adopting existing Job %s/%s", ref.namespace, name)
            return existing
        msg = (
            f"a Job named {name} already exists and is not owned by this ClipJob; "
            "delete it or recreate the ClipJob under another name"
        )
        await self._write(body, self._terminal_status(body, Phase.FAILED, "JobConflict", msg))
        self._announce(body, Phase.FAILED, "JobConflict", msg, None)
        return None

    # -- following ------------------------------------------------------------------------

    async def _follow(
        self, body: dict[str, Any], ref: ClipJobRef, spec: ClipJobSpec, job: dict[str, Any]
    ) -> None:
        pods: list[dict[str, Any]] = []
        if job_finished(job):
            pods = await self.kube.list_job_pods(ref.namespace, job["metadata"]["name"])
        obs = observe_job(job, pods)
        status = body.get("status") or {}
        if (
            obs.phase == Phase.QUEUED
            and obs.reason == "Starting"
            and status.get("phase") == Phase.RUNNING.value
        ):
            # The container has exited (not ready) but the Job controller has not counted it
            # yet: still Running, never back to Queued.
            return
        if (
            obs.phase not in TERMINAL_PHASES
            and status.get("phase") == obs.phase.value
            and status.get("reason") == obs.reason
            and status.get("jobName") == job["metadata"]["name"]
            and status.get("observedGeneration") == body["metadata"].get("generation", 1)
        ):
            return  # only counters moved (attempts, startTime): not worth a write
        desired: dict[str, Any] = {
            "phase": obs.phase.value,
            "observedGeneration": body["metadata"].get("generation", 1),
            "jobName": job["metadata"]["name"],
            "attempts": obs.attempts,
            "queuedAt": status.get("queuedAt") or now_iso(),
            "reason": obs.reason,
            "message": obs.message,
        }
        if obs.start_time:
            desired["startTime"] = obs.start_time
        if obs.phase in TERMINAL_PHASES:
            desired["completionTime"] = obs.completion_time or now_iso()
            created = parse_time(body["metadata"].get("creationTimestamp"))
            desired["timings"] = timings_from_result(
                obs.result,
                created,
                parse_time(obs.start_time),
                parse_time(desired["completionTime"]),
            )
        if obs.phase == Phase.SUCCEEDED:
            bucket = resolve_bucket(spec, self.config) or ""
            output = output_from_result(obs.result or {}, bucket, object_key(ref, spec))
            desired["output"] = output
            try:
                url, expires = await self.presigner.presign(
                    ref, spec, output["bucket"], output["key"]
                )
                desired["url"], desired["urlExpiresAt"] = url, expires
            except Exception as exc:  # the clip exists; the loop retries the URL
                log.warning("presigning %s/%s failed: %s", ref.namespace, ref.name, exc)
                self.events.warn(body, reason="PresignFailed", message=str(exc))
        desired["conditions"] = build_conditions(
            obs.phase,
            obs.reason,
            obs.message,
            desired["observedGeneration"],
            status.get("conditions"),
            now_iso(),
        )
        changed = await self._write(body, desired)
        if changed and status.get("phase") != obs.phase.value:
            self._announce(body, obs.phase, obs.reason, obs.message, obs.result)
            if obs.phase in TERMINAL_PHASES:
                self.wake.set()

    def _announce(
        self,
        body: dict[str, Any],
        phase: Phase,
        reason: str,
        message: str,
        result: dict[str, Any] | None,
    ) -> None:
        uid = body["metadata"]["uid"]
        if phase in TERMINAL_PHASES:
            # Exactly once per ClipJob and process, whatever the watch replays.
            if uid in self.announced:
                return
            self.announced.add(uid)
        if phase == Phase.FAILED:
            self.events.warn(body, reason=reason, message=message)
            metrics.JOB_LATENCY.labels("error").observe(self._age(body))
        elif phase == Phase.QUEUED and reason == "Starting":
            pass  # the JobCreated event already said so
        else:
            self.events.info(body, reason=phase.value, message=message)
        if phase == Phase.SUCCEEDED:
            metrics.JOB_LATENCY.labels("done").observe(self._age(body))
            if result:
                metrics.record_worker_result(result)

    # -- writing --------------------------------------------------------------------------

    async def _write_queued(self, body: dict[str, Any], reason: str, message: str) -> None:
        status = body.get("status") or {}
        first = not status.get("queuedAt")
        desired = {
            "phase": Phase.QUEUED.value,
            "observedGeneration": body["metadata"].get("generation", 1),
            "queuedAt": status.get("queuedAt") or now_iso(),
            "reason": reason,
            "message": message,
            "conditions": build_conditions(
                Phase.QUEUED,
                reason,
                message,
                body["metadata"].get("generation", 1),
                status.get("conditions"),
                now_iso(),
            ),
        }
        if await self._write(body, desired) and first:
            metrics.JOBS_QUEUED_TOTAL.inc()
            self.events.info(body, reason="Queued", message=message)

    def _terminal_status(
        self, body: dict[str, Any], phase: Phase, reason: str, message: str
    ) -> dict[str, Any]:
        status = body.get("status") or {}
        gen = body["metadata"].get("generation", 1)
        return {
            "phase": phase.value,
            "observedGeneration": gen,
            "queuedAt": status.get("queuedAt") or now_iso(),
            "completionTime": status.get("completionTime") or now_iso(),
            "reason": reason,
            "message": message,
            "conditions": build_conditions(
                phase, reason, message, gen, status.get("conditions"), now_iso()
            ),
        }

    async def _write(self, body: dict[str, Any], desired: dict[str, Any]) -> bool:
        """Patch only what differs (ignoring condition timestamps); update the cache."""
        current = body.get("status") or {}
        patch = status_changes(current, desired)
        if set(patch) == {"conditions"} and _same_conditions(
            current.get("conditions"), desired["conditions"]
        ):
            patch = {}
        if not patch:
            return False
        ref = ref_of(body)
        rv = await self.kube.patch_status(ref.namespace, ref.name, patch)
        body["status"] = {**current, **patch}
        self._remember(body, rv)
        return True

    @staticmethod
    def _age(body: dict[str, Any]) -> float:
        created = parse_time(body["metadata"].get("creationTimestamp"))
        return max(0.0, (datetime.now(UTC) - created).total_seconds()) if created else 0.0

    # -- URL refresh ----------------------------------------------------------------------

    def refresh_due(self, uid: str, body: dict[str, Any], now: float) -> bool:
        """Cheap check for the loop: is this ClipJob's URL (maybe) due for a refresh?"""
        due = self.refresh_at.get(uid)
        if due is None:
            status = body.get("status") or {}
            expires = parse_time(status.get("urlExpiresAt"))
            if expires is None:
                return True
            # Lifetime unknown without parsing the spec: be early rather than late.
            due = expires.timestamp() - MAX_URL_EXPIRES_SECONDS * self.config.url_refresh_fraction
            due = max(due, expires.timestamp() - 60 * 60 * 24)
            due = min(due, expires.timestamp() - 60)
            self.refresh_at[uid] = due
        return now >= due

    async def refresh_url(self, uid: str) -> None:
        """Re-presign a Succeeded ClipJob's URL when little of its lifetime is left."""
        async with self.store.lock(uid):
            body = self.store.clipjobs.get(uid)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            status = body.get("status") or {}
            output = status.get("output")
            if status.get("phase") != Phase.SUCCEEDED.value or not output:
                return
            spec = parse_spec(body.get("spec"))
            lifetime = self.config.effective_url_expiry(spec.url_expires_seconds)
            expires_at = parse_time(status.get("urlExpiresAt"))
            if expires_at is not None:
                self.refresh_at[uid] = (
                    expires_at.timestamp() - lifetime * self.config.url_refresh_fraction
                )
            if not needs_refresh(
                status.get("urlExpiresAt"),
                lifetime,
                self.config.url_refresh_fraction,
                datetime.now(UTC),
            ):
                return
            url, expires = await self.presigner.presign(
                ref_of(body), spec, output["bucket"], output["key"]
            )
            await self._write(body, {"url": url, "urlExpiresAt": expires})
            self.refresh_at[uid] = time.time() + lifetime * (1 - self.config.url_refresh_fraction)

    # -- deletion -------------------------------------------------------------------------

    async def _finalize(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        if FINALIZER not in meta.get("finalizers", []):
            return
        ref = ref_of(body)
        try:
            spec = parse_spec(body.get("spec"))
        except InvalidSpec:
            spec = None
        if spec is not None and resolve_bucket(spec, self.config):
            job = self.store.jobs.get(ref.uid)
            if job is not None and not job_finished(job):
                await self.kube.delete_job(ref.namespace, job_name(ref))  # no upload after delete
            deleted_at = parse_time(meta["deletionTimestamp"]) or datetime.now(UTC)
            waited = (datetime.now(UTC) - deleted_at).total_seconds()
            try:
                await self.presigner.delete(
                    ref, spec, resolve_bucket(spec, self.config) or "", object_key(ref, spec)
                )
                self.events.info(body, reason="ObjectDeleted", message="deleted the clip from S3")
            except Exception as exc:
                if waited < self.config.delete_retry_limit_seconds:
                    msg = (
                        f"could not delete the clip from S3 ({exc}); retrying for up to "
                        f"{self.config.delete_retry_limit_seconds} s after deletion"
                    )
                    if (body.get("status") or {}).get("reason") != "DeleteFailed":
                        self.events.warn(body, reason="DeleteFailed", message=msg)
                    await self._write(body, {"reason": "DeleteFailed", "message": msg})
                    return  # the loop retries
                self.events.warn(
                    body,
                    reason="DeleteAbandoned",
                    message=f"gave up deleting the clip from S3 after {int(waited)} s: {exc}",
                )
        await self.kube.update_finalizers(ref.namespace, ref.name, remove=FINALIZER)
        meta["finalizers"] = [f for f in meta.get("finalizers", []) if f != FINALIZER]


def _same_conditions(a: list[dict[str, Any]] | None, b: list[dict[str, Any]]) -> bool:
    def strip(conds: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conds or []]

    return strip(a) == strip(b)
