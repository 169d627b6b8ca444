"""Slow S3 calls run beside the work queue, never inside a worker.

`start` runs a call in the background; when it finishes, its key is enqueued again and
the next reconcile `take`s the outcome. A tenant's unreachable endpoint therefore costs
background tasks (bounded per endpoint in presign.py), not reconcile workers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("clip_operator.s3ops")

Outcome = tuple[Any, BaseException | None]


class S3Ops:
    def __init__(self, on_done: Callable[[str], None]) -> None:
        self.on_done = on_done
        self._running: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self._done: dict[tuple[str, str], Outcome] = {}

    def start(self, uid: str, kind: str, call: Coroutine[Any, Any, Any]) -> None:
        key = (uid, kind)
        if key in self._running:
            call.close()  # already under way
            return
        task = asyncio.get_running_loop().create_task(call, name=f"s3-{kind}-{uid}")
        self._running[key] = task
        task.add_done_callback(lambda t: self._finished(key, t))

    def _finished(self, key: tuple[str, str], task: asyncio.Task[Any]) -> None:
        if self._running.get(key) is not task:
            return
        del self._running[key]
        if task.cancelled():
            return
        exc = task.exception()
        self._done[key] = (None if exc else task.result(), exc)
        self.on_done(key[0])

    def take(self, uid: str, kind: str) -> Outcome | None:
        """The finished outcome (once), or None when none is ready."""
        return self._done.pop((uid, kind), None)

    def running(self) -> int:
        return len(self._running)

    def forget(self, uid: str) -> None:
        for key in [k for k in self._running if k[0] == uid]:
            self._running.pop(key).cancel()
        for key in [k for k in self._done if k[0] == uid]:
            del self._done[key]
