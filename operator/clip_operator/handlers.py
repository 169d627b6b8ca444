"""kopf wiring only: watch events feed the controller's cache and work queue.

Only `on.event` handlers: they keep no kopf state on the objects (no progress or
diff-base annotations, no finalizers), so a ClipJob costs no writes beyond the status
patches the controller decides on. Reconciling happens in the controller's own workers
(controller.py, workqueue.py), never inside kopf's per-object tasks.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import kopf

from . import metrics, runtime
from .builders import LABEL_MANAGED_BY, MANAGED_BY
from .cache import owner_uid, slim_job
from .config import OperatorConfig, load_config
from .controller import Controller
from .kube import Kube
from .leader import LeaderElector, LeaseSettings
from .models import GROUP, PLURAL, VERSION
from .presign import Presigner

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
    # Handlers only touch the cache, so kopf's per-object tasks are short-lived.
    settings.batching.worker_limit = 500
    settings.batching.idle_timeout = 0.5
    # Only our Jobs are listed and watched (server-side), in pages.
    settings.watching.label_selectors["batch", "jobs"] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    settings.watching.label_selectors["v1", "pods"] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    settings.watching.chunk_size = 200
    settings.persistence.finalizer = "mememaker.io/kopf-finalizer"
    settings.persistence.diffbase_storage = NoDiffBase()
    # The CLI refuses to start without the ClipJob CRD; kopf's cluster-wide namespace/CRD
    # scanning buys nothing and needs cluster-scoped RBAC a namespaced install lacks.
    settings.scanning.disabled = True
    # API calls run in threads (the client is synchronous).
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=config.api_threads, thread_name_prefix="kube")
    )
    kube = Kube.connect()
    controller = Controller(kube, config, Presigner(kube, config))
    # Jobs first: the in-flight count must be right before any ClipJob is admitted.
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    jobs = await asyncio.to_thread(kube.list_jobs_sync, selector, config.namespaces, slim_job)
    for job in jobs:
        controller.job_event("ADDED", job)
    memo["config"] = config
    memo["controller"] = controller
    elector = LeaderElector(kube, LeaseSettings.of(config)) if config.leader_election else None
    memo["tasks"] = await runtime.start(controller, elector)
    if config.health_port:
        memo["health"] = await runtime.serve_health(controller, config.health_port, elector)
    metrics.start_metrics_server(config.metrics_port)
    log.info(
        "clip-operator started: namespaces=%s in-flight limit=%s workers=%s job image=%s",
        ",".join(config.namespaces) or "(all)",
        config.in_flight_limit or "none",
        config.workers,
        config.job_image,
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await runtime.stop(memo.get("tasks") or [])
    health = memo.get("health")
    if health is not None:
        await health.cleanup()
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        await controller.events.drain()
        await controller.notifier.close()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def clipjob_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    controller: Controller = memo["controller"]
    controller.clipjob_event(event.get("type"), dict(event.get("object") or {}))


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def job_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    controller: Controller = memo["controller"]
    raw = dict(event.get("object") or {})
    if owner_uid(raw) is not None:
        controller.job_event(event.get("type"), raw)


@kopf.on.event("", "v1", "pods", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def pod_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    """Worker Pods: one that exited 0 finishes its ClipJob before the Job controller acts."""
    controller: Controller = memo["controller"]
    controller.pod_event(event.get("type"), dict(event.get("object") or {}))
