"""kopf wiring: watch ClipJobs and managed Jobs, feed the store, call the reconciler.

Only `on.event` handlers: they keep no kopf state on the objects (no progress or
diff-base annotations, no finalizers), so a ClipJob costs no writes beyond the status
patches the reconciler decides on. Work spanning many ClipJobs (the in-flight queue,
URL refresh, retries, gauges) runs in one operator-wide loop started at startup.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import kopf

from . import metrics
from .builders import LABEL_MANAGED_BY, MANAGED_BY
from .config import OperatorConfig, load_config
from .kube import Kube
from .loop import run_loop
from .models import GROUP, PLURAL, VERSION
from .presign import Presigner
from .reconcile import Reconciler, owner_uid, slim_job

log = logging.getLogger("clip_operator")


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff base that is never built, fetched or stored.

    We register no change-detecting handlers, so kopf never uses a diff base; it still
    builds one for every watch event by deep-copying the whole object (status and
    managedFields included). bench/operator measured that as most of the operator's CPU.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: OperatorConfig = memo.get("config") or load_config()
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    # kopf runs one worker per object; a small pool (64) whose workers idled 5 s after each
    # event limited a 1,000-ClipJob burst to ~9 ClipJobs/s (bench/RESULTS.md). A large pool
    # with short idling keeps throughput and still bounds the tasks alive at once.
    settings.batching.worker_limit = 500  # bounds memory when thousands of objects arrive
    settings.batching.idle_timeout = 0.5
    # Only our Jobs are listed and watched (server-side), in pages: not every Job in scope
    # at once, which at 5,000 Jobs was hundreds of MB of JSON parsed in one go.
    settings.watching.label_selectors["batch", "jobs"] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    settings.watching.chunk_size = 200
    settings.batching.batch_window = 0.05  # react fast; the reconciler coalesces writes itself
    settings.persistence.finalizer = "mememaker.io/kopf-finalizer"
    settings.persistence.diffbase_storage = NoDiffBase()
    # The CLI refuses to start without the ClipJob CRD; kopf's cluster-wide namespace/CRD
    # scanning buys nothing and needs cluster-scoped RBAC a namespaced install lacks.
    settings.scanning.disabled = True
    # API calls run in threads (the client is synchronous): enough of them that a burst of
    # ClipJobs is not serialised behind a handful of slow requests.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=config.api_threads, thread_name_prefix="kube")
    )
    kube = Kube.connect()
    reconciler = Reconciler(kube, config, Presigner(kube, config))
    await reconciler.seed()
    memo["config"] = config
    memo["reconciler"] = reconciler
    memo["loop_task"] = asyncio.create_task(run_loop(reconciler), name="clip-operator-loop")
    metrics.start_metrics_server(config.metrics_port)
    log.info(
        "clip-operator started: namespaces=%s in-flight limit=%s job image=%s",
        ",".join(config.namespaces) or "(all)",
        config.in_flight_limit or "none",
        config.job_image,
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("loop_task")
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    reconciler: Reconciler | None = memo.get("reconciler")
    if reconciler is not None:
        await reconciler.events.drain()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def clipjob_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    reconciler: Reconciler = memo["reconciler"]
    raw: dict[str, Any] = dict(event.get("object") or {})
    uid = (raw.get("metadata") or {}).get("uid")
    if not uid:
        return
    if event.get("type") == "DELETED":
        reconciler.forget(uid)
        return
    if reconciler.observe(raw):
        await reconciler.reconcile_logged(uid, "clipjob_event")


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def job_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    reconciler: Reconciler = memo["reconciler"]
    raw: dict[str, Any] = dict(event.get("object") or {})
    owner = owner_uid(raw)
    if owner is None:
        return
    if event.get("type") == "DELETED":
        current = reconciler.store.jobs.get(owner)
        if current is not None and current["metadata"].get("uid") == raw["metadata"].get("uid"):
            del reconciler.store.jobs[owner]
        reconciler.wake.set()
        return
    reconciler.store.jobs[owner] = slim_job(raw)
    if owner in reconciler.store.clipjobs:
        await reconciler.reconcile_logged(owner, "job_event")
