"""The operator-wide loop: queue admission, URL refresh, retries and cluster gauges.

One task for all ClipJobs instead of per-object kopf timers/daemons, which would force
a finalizer onto every ClipJob (deleting one would then hang whenever the operator is
down) and cost a task per object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from . import metrics
from .memory import release_memory
from .models import Phase
from .queue import admit
from .reconcile import FINALIZER, Reconciler, job_finished
from .status import parse_time

log = logging.getLogger("clip_operator")
COALESCE_SECONDS = 0.1


async def run_loop(reconciler: Reconciler) -> None:
    """Admit queued ClipJobs as soon as a slot frees up; do everything else every interval.

    Wake-ups (a Job finished) only run queue admission: the full pass scans every
    ClipJob, and running it on each of thousands of completions cost most of the
    operator's CPU at 5,000 ClipJobs (bench/RESULTS.md).
    """
    interval = reconciler.config.loop_interval_seconds
    last_full = 0.0
    while True:
        woke = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reconciler.wake.wait(), timeout=interval)
            woke = True
            await asyncio.sleep(COALESCE_SECONDS)  # one pass for a burst of freed slots
        reconciler.wake.clear()
        full = not woke or time.monotonic() - last_full >= interval
        try:
            with metrics.observe_reconcile("loop"):
                await tick(reconciler, full=full)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("operator loop tick failed; continuing")
        if full:
            last_full = time.monotonic()


async def tick(reconciler: Reconciler, full: bool = True) -> None:
    store = reconciler.store
    # 1. Start waiting ClipJobs, oldest first, as far as the in-flight limit allows.
    #    Without a limit every ClipJob starts from its own event; the retries below
    #    cover the ones whose start failed.
    if reconciler.config.in_flight_limit > 0:
        admitted = admit(store.waiting(), store.in_flight(), reconciler.config.in_flight_limit)
        for entry in admitted:
            await reconciler.reconcile_logged(entry.uid, "loop")
    if not full:
        return
    # 2. Retry what failed, and deletions still waiting on S3.
    retry = set(reconciler.dirty)
    for uid, body in list(store.clipjobs.items()):
        meta = body["metadata"]
        if meta.get("deletionTimestamp") and FINALIZER in meta.get("finalizers", []):
            retry.add(uid)
    for uid in retry:
        await reconciler.reconcile_logged(uid, "loop")
    # 3. Keep presigned URLs alive.
    now = time.time()
    for uid, body in list(store.clipjobs.items()):
        status = body.get("status") or {}
        if status.get("phase") == Phase.SUCCEEDED.value and reconciler.refresh_due(uid, body, now):
            try:
                await reconciler.refresh_url(uid)
            except Exception as exc:
                log.warning("refreshing the URL of %s failed: %s", meta_name(body), exc)
    # 4. Gauges from the cluster state (right after restarts, unlike counters).
    update_gauges(reconciler)
    # 5. Hand freed heap back to the OS after bursts (glibc keeps it otherwise).
    release_memory()


def meta_name(body: dict[str, object]) -> str:
    meta = body.get("metadata")
    if isinstance(meta, dict):
        return f"{meta.get('namespace')}/{meta.get('name')}"
    return "?"


def update_gauges(reconciler: Reconciler) -> None:
    store = reconciler.store
    now = datetime.now(UTC)
    running = [j for j in store.jobs.values() if not job_finished(j)]
    metrics.JOBS_INFLIGHT.set(len(running))
    metrics.QUEUE_DEPTH.set(len(store.waiting()))
    oldest = 0.0
    for job in running:
        created = parse_time((job.get("metadata") or {}).get("creationTimestamp"))
        if created:
            oldest = max(oldest, (now - created).total_seconds())
    metrics.OLDEST_INFLIGHT_AGE.set(oldest)
