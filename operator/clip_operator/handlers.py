"""kopf wiring only: start-up and clean-up of the controller, its watches and tasks.

kopf runs the process (login, signals, graceful stop) and nothing per object: the
watches of ClipJobs, our Jobs and their Pods are the operator's own (watches.py), feeding
the controller's cache and work queue; no kopf state is kept on the objects (no progress
or diff-base annotations, no finalizers), so a ClipJob costs no writes beyond the status
patches the controller decides on. Reconciling happens in the controller's own workers
(controller.py, workqueue.py).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from . import metrics, runtime, shutdown
from .builders import LABEL_MANAGED_BY, MANAGED_BY
from .config import OperatorConfig, load_config
from .controller import Controller
from .kube import Kube, collection_paths
from .leader import LeaderElector, LeaseSettings
from .models import GROUP, PLURAL, VERSION
from .presign import Presigner
from .watches import Stream

log = logging.getLogger("clip_operator")


def streams(kube: Kube, controller: Controller, namespaces: list[str]) -> dict[str, list[Stream]]:
    """The watches the cache needs, by kind: only our Jobs and Pods (server-side selector)."""
    ours = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    return {
        "jobs": [
            Stream(kube, p, ours, controller.job_event)
            for p in collection_paths("/apis/batch/v1", "jobs", namespaces)
        ],
        "clipjobs": [
            Stream(kube, p, "", controller.clipjob_event)
            for p in collection_paths(f"/apis/{GROUP}/{VERSION}", PLURAL, namespaces)
        ],
        "pods": [
            Stream(kube, p, ours, controller.pod_event)
            for p in collection_paths("/api/v1", "pods", namespaces)
        ],
    }


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: OperatorConfig = memo.get("config") or load_config()
    # The CLI refuses to start without the ClipJob CRD; kopf's cluster-wide namespace/CRD
    # scanning buys nothing and needs cluster-scoped RBAC a namespaced install lacks.
    settings.scanning.disabled = True
    # Blocking calls (S3 signing, the resync's LISTs) run in threads.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=config.api_threads, thread_name_prefix="kube")
    )
    kube = Kube.connect()
    controller = Controller(kube, config, Presigner(kube, config))
    watches = streams(kube, controller, config.namespaces)
    # Jobs first: the in-flight count must be right before any ClipJob is admitted. Their
    # watches then resume from this LIST.
    await asyncio.gather(*(stream.list() for stream in watches["jobs"]))
    memo["config"] = config
    memo["controller"] = controller
    elector = LeaderElector(kube, LeaseSettings.of(config)) if config.leader_election else None
    tasks = await runtime.start(controller, elector)
    memo["tasks"] = tasks + [
        asyncio.create_task(stream.run(), name=f"watch {stream.path}")
        for kind in ("jobs", "clipjobs", "pods")
        for stream in watches[kind]
    ]
    memo["watches"] = watches
    if memo.get("stop") is not None:  # `clip-operator run` (cli.py): the Lease goes first
        shutdown.install(memo["tasks"], memo["stop"])
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
        await controller.kube.close()
