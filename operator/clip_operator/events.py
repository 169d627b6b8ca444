"""Kubernetes Events on ClipJobs, posted in the background (never blocks a reconcile).

Our own small poster rather than kopf.event(): kopf's only works inside its handlers,
and the operator-wide loop posts Events too (queue admission, deletion retries).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("clip_operator.events")
MAX_MESSAGE = 1024


class EventPoster:
    def __init__(self, kube: Any, component: str = "clip-operator") -> None:
        self.kube = kube
        self.component = component
        self._tasks: set[asyncio.Task[None]] = set()

    def post(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        meta = body.get("metadata") or {}
        now = datetime.now(UTC)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name')}.{uuid.uuid4().hex[:12]}",
                "namespace": meta.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": body.get("apiVersion", "mememaker.io/v1alpha1"),
                "kind": body.get("kind", "ClipJob"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": kind,
            "reason": reason,
            "message": message[:MAX_MESSAGE],
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.component,
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        }
        task = asyncio.get_running_loop().create_task(self._send(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, event: dict[str, Any]) -> None:
        try:
            await self.kube.create_event(event["metadata"]["namespace"], event)
        except Exception as exc:  # an Event is best effort; the status carries the truth
            log.debug("posting event %s failed: %s", event["reason"], exc)

    def info(self, body: dict[str, Any], reason: str, message: str) -> None:
        self.post(body, "Normal", reason, message)

    def warn(self, body: dict[str, Any], reason: str, message: str) -> None:
        self.post(body, "Warning", reason, message)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
