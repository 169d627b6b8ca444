"""LIST + WATCH of what the cache holds: ClipJobs, our Jobs and their worker Pods.

kopf's watches were most of the operator's CPU per ClipJob (bench/RESULTS.md, issue 18):
every event parsed with the standard json module, then wrapped in kopf's body views with a
per-object logger, queue, task and handler invocation, only for an `on.event` handler that
handed the object to the cache. Here a stream reads the API server's event lines, parses
each once (orjson) and hands the object straight to the controller, which
slims it into the cache.

Semantics are client-go's reflector (and kopf's): a paged LIST, then a WATCH from the
LIST's resourceVersion with bookmarks; a dropped connection resumes from the last
resourceVersion seen; `410 Gone` re-LISTs, delivering every object again (kind None), and
objects deleted in that gap are dropped by the controller's periodic resync.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import aiohttp
from kubernetes.client.exceptions import ApiException

from .codec import loads
from .kube import PAGE, Kube, api_error

log = logging.getLogger("clip_operator.watches")
SERVER_TIMEOUT = 270  # seconds the API server keeps a watch open (jittered)
READ_TIMEOUT = 300  # no byte for this long (bookmarks come every minute): reconnect
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 10.0

Deliver = Callable[[str | None, dict[str, Any]], None]


class Gone(Exception):
    """The resourceVersion to resume from is no longer in the API server's history."""


class WatchError(Exception):
    """The API server ended a watch with an error event other than 410."""


class Stream:
    """One resource in one namespace (or all namespaces), listed then watched forever."""

    def __init__(self, kube: Kube, path: str, selector: str, deliver: Deliver) -> None:
        self.kube, self.path, self.selector, self.deliver = kube, path, selector, deliver
        self.resource_version: str | None = None
        self.events = 0  # events delivered (watch events and listed objects)

    def _query(self) -> list[tuple[str, str]]:
        return [("labelSelector", self.selector)] if self.selector else []

    async def list(self) -> None:
        """Deliver every object (kind None) and remember the LIST's resourceVersion."""
        token = ""
        while True:
            query = [*self._query(), ("limit", str(PAGE))]
            if token:
                query.append(("continue", token))
            try:
                page = await self.kube.get(self.path, query, timeout=60)
            except ApiException as exc:
                if exc.status == 410 and token:  # the continue token expired: start over
                    token = ""
                    continue
                raise
            for item in page.get("items") or []:
                self._hand_over(None, item)
            meta = page.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                self.resource_version = str(meta.get("resourceVersion") or "") or None
                return

    async def watch(self) -> None:
        """One WATCH request from the last resourceVersion, until the server ends it."""
        query = [
            *self._query(),
            ("watch", "1"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(SERVER_TIMEOUT + random.randint(0, 30))),
        ]
        if self.resource_version:
            query.append(("resourceVersion", self.resource_version))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=READ_TIMEOUT)
        session = self.kube.session("watches")
        async with session.get(
            self.kube.host + self.path, params=query, headers=self.kube.headers(), timeout=timeout
        ) as resp:
            if resp.status == 410:
                raise Gone()
            if resp.status != 200:
                raise api_error(resp.status, resp.reason or "", await resp.read())
            rest = b""
            async for chunk in resp.content.iter_any():
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    if line.strip():
                        self._event(loads(line))

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise WatchError(f"error event {obj.get('code')}: {obj.get('message')}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.resource_version = str(rv)
        if kind != "BOOKMARK":
            self._hand_over(kind, obj)

    def _hand_over(self, kind: str | None, obj: dict[str, Any]) -> None:
        self.events += 1
        try:
            self.deliver(kind, obj)
        except Exception:  # a bug in one object's handling must not stop the stream
            log.exception("handling a %s event from %s failed", kind or "listed", self.path)

    async def run(self) -> None:
        """LIST when there is nothing to resume from, WATCH, and again, until cancelled."""
        backoff = BACKOFF_FIRST
        while True:
            try:
                if self.resource_version is None:
                    await self.list()
                await self.watch()
                backoff = BACKOFF_FIRST
            except asyncio.CancelledError:
                raise
            except Gone:
                log.info("watch of %s: history gone (410), listing again", self.path)
                self.resource_version = None
            except Exception as exc:  # the API server restarting, a timeout, a refusal: retry
                log.warning("watch of %s failed, again in %.1f s: %s", self.path, backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX, backoff * 2)
