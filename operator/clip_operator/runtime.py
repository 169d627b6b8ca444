"""The operator's background tasks: reconcile workers, timers, resync, housekeeping, health.

Started once from kopf's startup handler, cancelled from its cleanup handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from . import metrics
from .builders import LABEL_MANAGED_BY, MANAGED_BY
from .cache import job_finished, slim_clipjob, slim_job
from .controller import Controller
from .leader import LeaderElector
from .memory import release_memory
from .status import parse_time
from .workqueue import Result, serve

log = logging.getLogger("clip_operator")
LAG_PERIOD = 0.5


def _on_error(key: str, exc: BaseException) -> None:
    log.warning("reconcile of ClipJob uid %s failed, backing off: %s", key, exc)


async def resync(controller: Controller) -> None:
    """LIST everything and make the cache equal to it; enqueue every ClipJob."""
    listed_at = controller.clock()
    ns = controller.config.namespaces
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    jobs = await asyncio.to_thread(controller.kube.list_jobs_sync, selector, ns, slim_job)
    clipjobs = await asyncio.to_thread(controller.kube.list_clipjobs_sync, ns, slim_clipjob)
    gone, lost = controller.cache.resync(listed_at, clipjobs, jobs)
    for uid in gone:
        controller.forget(uid)
    for owner in lost:
        controller.admit(controller.admission.running(owner, active=False))
    for owner, job in controller.cache.jobs.items():
        namespace = job["metadata"].get("namespace") or ""
        controller.admit(controller.admission.running(owner, not job_finished(job), namespace))
    if gone or lost:
        log.info("resync: %d ClipJobs and %d Jobs were gone", len(gone), len(lost))
    controller.enqueue(set(controller.cache.clipjobs))


async def resync_loop(controller: Controller) -> None:
    period = controller.config.resync_seconds
    while True:
        await asyncio.sleep(period)
        try:
            with metrics.observe_reconcile("resync"):
                await resync(controller)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("resync failed; next one in %s s: %s", period, exc)


async def housekeeping(controller: Controller) -> None:
    """Gauges from the cache, and freed heap back to the OS (off the event loop)."""
    period = controller.config.loop_interval_seconds
    while True:
        update_gauges(controller)
        await asyncio.to_thread(release_memory)
        await asyncio.sleep(period)


async def loop_lag() -> None:
    while True:
        before = time.monotonic()
        await asyncio.sleep(LAG_PERIOD)
        metrics.EVENT_LOOP_LAG.observe(max(0.0, time.monotonic() - before - LAG_PERIOD))


def update_gauges(controller: Controller) -> None:
    now = datetime.now(UTC)
    running = [j for j in controller.cache.jobs.values() if not job_finished(j)]
    metrics.JOBS_INFLIGHT.set(len(running))
    # Waiting for a slot, or backing off after the API refused their Job: both are Queued.
    adm = controller.admission
    backing_off = sum(1 for uid in controller.refused if not adm.is_waiting(uid))
    metrics.QUEUE_DEPTH.set(adm.waiting() + backing_off)
    queued = dict(adm.waiting_by_namespace())
    for uid in controller.refused:
        cj = controller.cache.clipjobs.get(uid)
        if cj is not None and not adm.is_waiting(uid):
            ns = cj["metadata"].get("namespace") or ""
            queued[ns] = queued.get(ns, 0) + 1
    metrics.set_per_namespace(metrics.NAMESPACE_QUEUED, queued)
    inflight: dict[str, int] = {}
    for job in running:
        ns = (job.get("metadata") or {}).get("namespace") or ""
        inflight[ns] = inflight.get(ns, 0) + 1
    metrics.set_per_namespace(metrics.NAMESPACE_INFLIGHT, inflight)
    metrics.WORKQUEUE_DEPTH.set(controller.queue.depth())
    metrics.WORKQUEUE_DELAYED.set(controller.queue.delayed())
    oldest = 0.0
    for job in running:
        start = parse_time((job.get("metadata") or {}).get("creationTimestamp"))
        if start:
            oldest = max(oldest, (now - start).total_seconds())
    metrics.OLDEST_INFLIGHT_AGE.set(oldest)


async def serve_health(
    controller: Controller, port: int, elector: LeaderElector | None = None
) -> web.AppRunner:
    """GET /healthz: 200 while the work queue makes progress (or stands by), 503 when stuck.
    GET /readyz: 200 (the server starts when the operator has)."""

    async def healthz(_: web.Request) -> web.Response:
        leading = elector is None or elector.leading
        stalled = controller.queue.stalled_for() if leading else 0.0
        body = {
            "leader": leading,
            "stalledSeconds": round(stalled, 1),
            "queueDepth": controller.queue.depth(),
            "cachedClipJobs": len(controller.cache.clipjobs),
        }
        code = 503 if stalled > controller.config.stall_seconds else 200
        return web.json_response(body, status=code)

    async def readyz(_: web.Request) -> web.Response:
        # Served only once startup is done (Jobs listed, watches and the campaign running):
        # a rolling update waits for this before it stops an old Pod.
        return web.json_response({"leader": elector is None or elector.leading})

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz)])
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner


def reconcilers(
    controller: Controller, may_write: Callable[[], bool] | None = None
) -> list[asyncio.Task[Any]]:
    """The tasks that write: reconcile workers and the periodic resync."""
    reconcile = controller.reconcile
    if may_write is not None:
        guard = may_write

        async def reconcile(uid: str) -> Result:
            if not guard():  # the Lease may be lost: leave the key to the next leader
                raise LeaseNotHeld("not reconciling: the Lease was not renewed in time")
            return await controller.reconcile(uid)

    tasks = [
        asyncio.create_task(serve(controller.queue, reconcile, _on_error), name=f"w{i}")
        for i in range(controller.config.workers)
    ]
    return [*tasks, asyncio.create_task(resync_loop(controller), name="resync")]


class LeaseNotHeld(RuntimeError):
    """A reconcile refused because this replica may no longer hold the Lease."""


async def lead(controller: Controller, may_write: Callable[[], bool] | None = None) -> None:
    """A new leader's term: workers on the warm cache at once, a full resync to pick up
    whatever the standby missed, then reconcile until cancelled (leadership ended)."""
    controller.queue.last_progress = controller.clock()  # standing by was not a stall
    # The standby queued every ClipJob it saw, oldest first: unfinished ones go first, so
    # new work does not wait behind the re-check of every finished ClipJob.
    controller.queue.prioritise(lambda uid: not _finished(controller.cache.clipjobs.get(uid)))
    tasks = reconcilers(controller, may_write)
    try:
        for attempt in itertools.count(1):
            try:
                with metrics.observe_reconcile("resync"):
                    await resync(controller)
                break
            except Exception as exc:
                log.warning("resync on taking the lead failed (attempt %d): %s", attempt, exc)
                await asyncio.sleep(min(30.0, attempt))
        await asyncio.gather(*tasks)
    finally:
        await stop(tasks)


def _finished(clipjob: dict[str, Any] | None) -> bool:
    phase = ((clipjob or {}).get("status") or {}).get("phase")
    return clipjob is None or phase in ("Succeeded", "Failed")


def _terminate() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # kopf's graceful shutdown; the Pod restarts us


async def start(controller: Controller, elector: LeaderElector | None = None) -> list[Any]:
    """Background tasks; with an elector the writing ones run only while it leads."""
    tasks = [
        asyncio.create_task(controller.queue.run_timers(), name="timers"),
        asyncio.create_task(housekeeping(controller), name="housekeeping"),
        asyncio.create_task(loop_lag(), name="loop-lag"),
    ]
    if elector is None:
        metrics.LEADER.set(1)  # the only replica: it always reconciles
        return [*reconcilers(controller), *tasks]
    campaign = elector.run(lambda: lead(controller, elector.holds), _terminate)
    return [*tasks, asyncio.create_task(campaign, name="leader-election")]


async def stop(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.gather(*tasks, return_exceptions=True)
