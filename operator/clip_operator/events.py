"""Kubernetes Events on ClipJobs, like client-go's recorder: events.k8s.io/v1, deduplicated,
rate-limited, naming the reporting Pod, posted in the background (never blocks a reconcile).

- The same (object, type, reason, note) again within DEDUPE_SECONDS bumps the existing
  Event's `series` (count, lastObservedTime) instead of creating a new object.
- Per object, a token bucket (burst 25, one token per 5 minutes: client-go's spam filter)
  drops the excess, so a ClipJob in a retry loop cannot flood etcd.
- At most MAX_PENDING Events wait to be sent (client-go's broadcaster queue holds 1,000):
  in a burst the rest are dropped rather than held in memory, and a clean stop waits
  DRAIN_SECONDS at most for what is still pending.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("clip_operator.events")
MAX_NOTE = 1024
DEDUPE_SECONDS = 600.0
BURST, REFILL_SECONDS = 25, 300.0
MAX_PENDING = 1000
DRAIN_SECONDS = 5.0
CONTROLLER = "mememaker.io/clip-operator"


def _micro(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EventPoster:
    def __init__(self, kube: Any, component: str = "clip-operator") -> None:
        self.kube = kube
        self.component = component
        # The Pod's name in the cluster (downward API), else the host: who reported it.
        self.instance = os.environ.get("POD_NAME") or socket.gethostname()
        self._tasks: set[asyncio.Task[None]] = set()
        self._seen: dict[tuple[str, str, str, str], tuple[str, int, float]] = {}
        self._tokens: dict[str, tuple[float, float]] = {}  # uid -> (tokens, last refill)
        self.dropped = 0  # Events dropped because MAX_PENDING were waiting

    def _allow(self, uid: str, now: float) -> bool:
        tokens, last = self._tokens.get(uid, (float(BURST), now))
        tokens = min(float(BURST), tokens + (now - last) / REFILL_SECONDS)
        if tokens < 1:
            self._tokens[uid] = (tokens, now)
            return False
        self._tokens[uid] = (tokens - 1, now)
        if len(self._tokens) > 50_000:  # forget the quiet ones
            self._tokens = {k: v for k, v in self._tokens.items() if now - v[1] < REFILL_SECONDS}
        return True

    def post(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        meta = body.get("metadata") or {}
        uid, namespace = str(meta.get("uid")), str(meta.get("namespace"))
        note = message[:MAX_NOTE]
        mono, now = time.monotonic(), datetime.now(UTC)
        key = (uid, kind, reason, note)
        seen = self._seen.get(key)
        if seen is not None and mono - seen[2] < DEDUPE_SECONDS:
            name, count, _ = seen
            self._seen[key] = (name, count + 1, mono)
            patch = {"series": {"count": count + 1, "lastObservedTime": _micro(now)}}
            self._spawn(self.kube.patch_event(namespace, name, patch), reason)
            return
        if not self._allow(uid, mono):
            log.debug("dropping event %s for %s: rate limit", reason, meta.get("name"))
            return
        name = f"{meta.get('name')}.{uuid.uuid4().hex[:12]}"
        self._seen[key] = (name, 1, mono)
        if len(self._seen) > 50_000:
            self._seen = {k: v for k, v in self._seen.items() if mono - v[2] < DEDUPE_SECONDS}
        event = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "eventTime": _micro(now),
            "reportingController": CONTROLLER,
            "reportingInstance": self.instance[:128],
            "action": "Reconcile",
            "reason": reason,
            "note": note,
            "type": kind,
            "regarding": {
                "apiVersion": body.get("apiVersion", "mememaker.io/v1alpha1"),
                "kind": body.get("kind", "ClipJob"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": uid,
                "resourceVersion": meta.get("resourceVersion"),
            },
        }
        self._spawn(self.kube.create_event(namespace, event), reason)

    def _spawn(self, call: Any, reason: str) -> None:
        if len(self._tasks) >= MAX_PENDING:
            call.close()  # never awaited: the coroutine is dropped with the Event
            self.dropped += 1
            log.debug("dropping event %s: %d Events waiting to be sent", reason, MAX_PENDING)
            return
        task = asyncio.get_running_loop().create_task(self._send(call, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, call: Any, reason: str) -> None:
        try:
            await call
        except Exception as exc:  # an Event is best effort; the status carries the truth
            log.debug("posting event %s failed: %s", reason, exc)

    def info(self, body: dict[str, Any], reason: str, message: str) -> None:
        self.post(body, "Normal", reason, message)

    def warn(self, body: dict[str, Any], reason: str, message: str) -> None:
        self.post(body, "Warning", reason, message)

    async def drain(self, timeout: float = DRAIN_SECONDS) -> None:
        """Wait for the Events still being sent, `timeout` seconds at most."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
