"""reconcile(key): read the cached world, ask `decide` for a plan, carry the plan out.

Keys are ClipJob uids. Watch events and resyncs only fill the cache and enqueue keys;
N workers (workqueue.serve) call `reconcile`, one worker per key at a time. Slow S3
calls (result recovery, deletion) run as background operations that enqueue their key
when done, so a tenant's black-holed endpoint never holds a worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from . import logs, metrics
from .admission import Admission, QueueEntry
from .builders import (
    LABEL_MANAGED_BY,
    MANAGED_BY,
    ClipJobRef,
    UploadTarget,
    build_job,
    owner_reference,
    ref_of,
)
from .cache import Cache, job_finished, owner_uid
from .config import OperatorConfig
from .decide import decide
from .dedupe import TwinIndex
from .events import EventPoster
from .facts import FactFinder
from .kube import Kube
from .lifecycle import url_secret_name
from .models import Phase, parse_spec
from .plan import FINALIZER, Act, Facts, Need, Plan, Settings
from .podexit import ExitedPods
from .presign import Presigner
from .s3ops import S3Ops
from .status import parse_time, status_changes
from .webhook import Notifier
from .workqueue import Result, WorkQueue

log = logging.getLogger("clip_operator")
NETWORK_POLICY_NAME = "clip-worker-egress"


def api_message(exc: ApiException) -> str:
    import json

    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


class Controller(FactFinder):
    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        presigner: Presigner,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube, self.config, self.presigner = kube, config, presigner
        self.clock, self.wall = clock, wall
        self.cache = Cache(clock=clock)
        self.queue = WorkQueue(clock=clock)
        kueue = bool(config.kueue_queue_name)  # Kueue decides who runs: no limits of ours
        self.admission = Admission(
            0 if kueue else config.in_flight_limit,
            clock,
            namespace_limit=0 if kueue else config.namespace_in_flight_limit,
            namespace_limits={} if kueue else config.namespace_limits(),
        )
        self.events = EventPoster(kube)
        self.s3ops = S3Ops(self.queue.add)
        self.notifier = Notifier(kube, config, self.queue.add)  # webhooks, in the background
        self.settings = Settings(
            url_policy=config.url_policy,
            url_refresh_fraction=config.url_refresh_fraction,
            delete_retry_limit_seconds=config.delete_retry_limit_seconds,
            default_bucket=config.s3_bucket,
            notify_url=config.notify_url,
            notify_retry_seconds=config.notify_retry_seconds,
            dedupe=config.dedupe,
            progress_min_clip_seconds=config.progress_min_clip_seconds,
            clipjob_ttl_seconds=config.clipjob_ttl_seconds_after_finished,
            url_refresh_horizon_seconds=config.url_refresh_horizon_seconds,
        )
        self.twins = TwinIndex()  # unfinished ClipJobs by content digest (dedupe)
        self.refused: set[str] = set()  # ClipJobs backing off after a refused Job create
        self.policy_ready: set[str] = set()  # namespaces whose worker NetworkPolicy is ours
        self.announced: set[str] = set()  # terminal phases announced (once per process)
        self.exited = ExitedPods()  # worker Pods that exited 0 before their Job completed

    # -- inputs ---------------------------------------------------------------------------

    def enqueue(self, uids: list[str] | set[str]) -> None:
        for uid in uids:
            self.queue.add(uid)

    def admit(self, uids: list[str]) -> None:
        """ClipJobs just granted a slot: reconcile them before the rest of a burst."""
        for uid in uids:
            self.queue.add(uid, urgent=True)

    def clipjob_event(self, kind: str | None, raw: dict[str, Any]) -> None:
        uid = (raw.get("metadata") or {}).get("uid")
        if not uid:
            return
        if kind == "DELETED":
            self.forget(uid)
            return
        if self.cache.put_clipjob(raw):
            self.queue.add(uid)

    def job_event(self, kind: str | None, raw: dict[str, Any]) -> None:
        owner = owner_uid(raw)
        if owner is None:
            return
        if kind == "DELETED":
            if self.cache.drop_job(owner, (raw.get("metadata") or {}).get("uid")):
                self.admit(self.admission.running(owner, active=False))
        else:
            self.cache.put_job(owner, raw)
            if job_finished(raw):
                self.exited.forget(owner)  # the Job controller caught up
            namespace = (raw.get("metadata") or {}).get("namespace") or ""
            self.admit(self.admission.running(owner, not job_finished(raw), namespace))
        if owner in self.cache.clipjobs:
            self.queue.add(owner)

    def pod_event(self, kind: str | None, raw: dict[str, Any]) -> None:
        """A worker Pod exited 0: finish its ClipJob now, not when its Job completes."""
        owner = self.exited.see(kind, raw)
        if owner is not None and owner in self.cache.clipjobs:
            self.queue.add(owner, urgent=True)

    def forget(self, uid: str) -> None:
        """The ClipJob is gone: drop it everywhere and hand its slot on."""
        self.cache.drop_clipjob(uid)
        self.exited.forget(uid)
        self.refused.discard(uid)
        self.queue.drop(uid)
        self.s3ops.forget(uid)
        self.notifier.forget(uid)
        self.enqueue(self.twins.discard(uid))  # ClipJobs waiting for it make the clip now
        if uid not in self.cache.jobs:
            self.admit(self.admission.forget(uid))

    # -- reconcile ------------------------------------------------------------------------

    async def reconcile(self, uid: str) -> Result:
        # Every log line of this reconcile (and of the failure the worker reports) names it.
        logs.bind_clipjob(uid, self.cache.clipjobs.get(uid))
        try:
            with metrics.observe_reconcile("reconcile"):
                return await self._reconcile(uid)
        except Exception:
            # Backing off must not hold a slot: the next ClipJob gets it meanwhile.
            if uid not in self.cache.jobs and self.admission.admitted(uid):
                self.admit(self.admission.withdraw(uid))
            raise

    async def _reconcile(self, uid: str) -> Result:
        cj = self.cache.clipjobs.get(uid)
        if cj is None:
            self.forget(uid)
            return Result()
        self.enqueue(self.index_twin(cj))
        job = self.cache.jobs.get(uid)
        facts = Facts(admitted=self.admission.admitted(uid))
        pods: list[dict[str, Any]] | None = None
        if (early := self.exited.view(uid, job)) is not None:
            job, pods = early  # its Pod exited 0: the Job as it is about to complete
        upload: UploadTarget | None = None
        ref = ref_of(cj)
        plan = Plan()
        for _ in range(10):
            plan = decide(cj, job, pods, facts, self.wall(), self.settings)
            if Act.REQUEST_SLOT in plan.actions and not facts.admitted:
                meta = cj["metadata"]
                entry = QueueEntry(
                    meta["creationTimestamp"], ref.namespace, ref.name, uid, _priority(cj)
                )
                self.admit([u for u in self.admission.request(entry) if u != uid])
                if self.admission.admitted(uid):
                    facts.admitted = True
                    continue
            if Act.ADD_FINALIZER in plan.actions:
                if not await self._finalizer(cj, add=True):
                    return Result()
                continue
            if Act.CREATE_JOB in plan.actions and upload is not None:
                if plan.status and not (cj.get("status") or {}).get("jobName"):
                    await self._write(cj, plan.status)  # the name first: never two Jobs
                    if uid not in self.cache.clipjobs:
                        return Result()
                    cj = self.cache.clipjobs[uid]
                job = await self._create_job(cj, ref, upload, facts)
                continue
            if plan.need is None:
                break
            if plan.need == Need.PODS:
                pods = await self.kube.list_job_pods(ref.namespace, (job or {})["metadata"]["name"])
            elif plan.need == Need.UPLOAD:
                upload = await self._prepare_upload(cj, ref, facts)
            elif plan.need == Need.URL:
                await self._presign_url(cj, ref, facts)
            elif plan.need == Need.TWIN:
                facts.twin = self._twin(cj)
            elif plan.need == Need.OBJECT_USERS:
                facts.object_users = self._object_users(cj, ref)
            elif plan.need == Need.KUEUE:
                facts.kueue = await self.kube.kueue_reason(ref.namespace, job or {})
            elif plan.need == Need.LOOKUP_JOB:
                job = await self._lookup_job(cj, ref, facts)
            elif plan.need == Need.JOB_HISTORY:
                name = (cj.get("status") or {}).get("jobName") or ""
                facts.job_existed = await self.kube.job_has_events(ref.namespace, name)
            elif plan.need == Need.NOTIFY:
                if not self.notifier.step(cj, facts):
                    return Result()  # the delivery re-enqueues the key
            elif not self._s3(plan.need, cj, ref, facts):
                return Result()  # a background S3 operation re-enqueues the key
        if early is not None:  # the slot is the Job's until it is Complete (job_event)
            plan.actions = [a for a in plan.actions if a != Act.WITHDRAW]
        result = await self._carry_out(cj, ref, plan)
        if facts.notification is not None:  # in status now: a failed write keeps it
            self.notifier.settle(uid, facts.notification)
        return result

    async def _carry_out(self, cj: dict[str, Any], ref: ClipJobRef, plan: Plan) -> Result:
        uid = ref.uid
        before = (cj.get("status") or {}).get("phase")
        changed = True
        if plan.url_secret is not None:  # before status: Ready only once the URL is there
            await self._write_url_secret(cj, ref, *plan.url_secret)
        if plan.status is not None:
            changed = await self._write(cj, plan.status)
            if uid not in self.cache.clipjobs:
                return Result()  # 404: gone
        if changed:
            for kind, reason, message in plan.events:
                self.events.post(cj, kind, reason, message)
        if plan.terminal:
            self.refused.discard(uid)
            self.enqueue(self.twins.discard(uid))  # its waiters find the clip (or make it)
        if plan.terminal and changed and before != plan.terminal.value:
            self._announce(cj, plan)
        for action in plan.actions:
            if action == Act.WITHDRAW:
                self.admit(self.admission.withdraw(uid))
            elif action == Act.DELETE_JOB:
                job = self.cache.jobs.get(uid)
                if job is not None:
                    await self.kube.delete_job(ref.namespace, job["metadata"]["name"])
            elif action == Act.REMOVE_FINALIZER:
                await self._finalizer(cj, add=False)
            elif action == Act.DELETE_CLIPJOB:
                await self.kube.delete_clipjob(ref.namespace, ref.name, ref.uid)
                metrics.JOBS_EXPIRED.inc()
        return Result(plan.requeue_after, plan.rate_limited)

    def _announce(self, cj: dict[str, Any], plan: Plan) -> None:
        uid = cj["metadata"]["uid"]
        if uid in self.announced:
            return
        self.announced.add(uid)
        created = parse_time(cj["metadata"].get("creationTimestamp"))
        age = max(0.0, (self.wall() - created).total_seconds()) if created else 0.0
        if plan.terminal == Phase.SUCCEEDED:
            metrics.JOB_LATENCY.labels("done").observe(age)
            if plan.result:
                metrics.record_worker_result(plan.result)
        else:
            metrics.JOB_LATENCY.labels("error").observe(age)

    # -- actions --------------------------------------------------------------------------

    async def _create_job(
        self, cj: dict[str, Any], ref: ClipJobRef, upload: UploadTarget, facts: Facts
    ) -> dict[str, Any] | None:
        spec = parse_spec(cj.get("spec"))
        manifest = build_job(ref, spec, self.config, upload)
        name = manifest["metadata"]["name"]
        try:
            await self._ensure_network_policy(ref.namespace)
            job = await self.kube.create_job(ref.namespace, manifest)
            self.events.info(cj, reason="JobCreated", message=f"created Job {name}")
        except ApiException as exc:
            if exc.status != 409:
                if exc.status in (400, 403, 404, 422, 429) or exc.status >= 500:
                    facts.create_refused = (exc.status, api_message(exc))
                    self.refused.add(ref.uid)
                    metrics.JOB_CREATE_REFUSED.labels(ref.namespace).inc()
                    # Handled (shown in status, retried), yet an error of the reconcile.
                    metrics.RECONCILE_ERRORS.labels("reconcile", "JobCreateRefused").inc()
                    return None
                raise
            job = await self.kube.read_job(ref.namespace, name)
            if owner_uid(job) != ref.uid:
                facts.job_conflict = (
                    f"a Job named {name} already exists and is not owned by this ClipJob; "
                    "delete it or recreate the ClipJob under another name"
                )
                return None
            log.info("adopting existing Job %s/%s", ref.namespace, name)
        self.refused.discard(ref.uid)
        took = self.admission.took(ref.uid)
        if took is not None:
            metrics.ADMISSION_SECONDS.observe(took)
        self.cache.put_job(ref.uid, job)
        self.admission.running(ref.uid, True, ref.namespace)
        return self.cache.jobs[ref.uid]

    async def _write_url_secret(
        self, cj: dict[str, Any], ref: ClipJobRef, url: str, expires: str
    ) -> None:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": url_secret_name(cj),
                "namespace": ref.namespace,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY},
                "ownerReferences": [owner_reference(ref)],
            },
            "stringData": {"url": url, "expiresAt": expires},
        }
        await self.kube.put_secret(ref.namespace, secret)

    async def _ensure_network_policy(self, namespace: str) -> None:
        spec = self.config.network_policy_spec()
        if spec is None or namespace in self.policy_ready:
            return
        labels = {LABEL_MANAGED_BY: MANAGED_BY}
        await self.kube.ensure_network_policy(namespace, NETWORK_POLICY_NAME, spec, labels)
        self.policy_ready.add(namespace)

    async def _finalizer(self, cj: dict[str, Any], add: bool) -> bool:
        ref = ref_of(cj)
        rv = await self.kube.update_finalizers(
            ref.namespace,
            ref.name,
            add=FINALIZER if add else None,
            remove=None if add else FINALIZER,
        )
        if rv is None:
            self.forget(ref.uid)
            return False
        meta = cj["metadata"]
        current = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
        meta["finalizers"] = [*current, FINALIZER] if add else current
        meta["resourceVersion"] = rv
        return True

    async def _write(self, cj: dict[str, Any], desired: dict[str, Any]) -> bool:
        """Patch only what differs (ignoring condition timestamps); update the cache."""
        current = cj.get("status") or {}
        patch = status_changes(current, desired)
        if "conditions" in patch and _same_conditions(
            current.get("conditions"), desired["conditions"]
        ):
            del patch["conditions"]
        if not patch:
            return False
        ref = ref_of(cj)
        rv = await self.kube.patch_status(ref.namespace, ref.name, patch)
        if rv is None:
            self.forget(ref.uid)  # 404: deleted behind our back
            return False
        _count_firsts(current, patch)
        merged = {k: v for k, v in {**current, **patch}.items() if v is not None}
        self.cache.wrote_status(ref.uid, merged, rv)
        metrics.STATUS_WRITES.inc()
        return True


def _count_firsts(before: dict[str, Any], patch: dict[str, Any]) -> None:
    """Count what a status write shows for the first time (every write comes through
    _write): a ClipJob accepted (first queued, also straight into a slot), a dedupe verdict."""
    if patch.get("queuedAt") and not before.get("queuedAt"):
        metrics.JOBS_QUEUED_TOTAL.inc()
    if patch.get("reason") == "WaitingForTwin" and before.get("reason") != "WaitingForTwin":
        metrics.DEDUPE.labels("twin").inc()
    verdict = patch.get("cache")
    if verdict in ("Hit", "Miss") and before.get("cache") != verdict:
        metrics.DEDUPE.labels(verdict.lower()).inc()


def _priority(cj: dict[str, Any]) -> int:
    value = (cj.get("spec") or {}).get("priority")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _same_conditions(a: list[dict[str, Any]] | None, b: list[dict[str, Any]]) -> bool:
    def strip(conds: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conds or []]

    return strip(a) == strip(b)
