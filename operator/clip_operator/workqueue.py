"""A deduplicating, rate-limited work queue with the semantics of client-go's workqueue.

- A key is queued at most once (`dirty`); a key being processed is never handed to a
  second worker (`processing`); added again meanwhile, it is served once more after.
- `add_after` delays a key (timers: URL refresh, deletion retries, Pod checks); the
  earliest due time per key wins.
- `add_rate_limited` backs off per key, exponentially with jitter, until `forget`.
- Time comes from an injectable clock so tests can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("clip_operator.workqueue")

Clock = Callable[[], float]


@dataclass(frozen=True)
class Result:
    """What a reconcile asks for: nothing, or to run again after a delay."""

    requeue_after: float | None = None
    # Back off like an error (exponential, jittered, not reset) while still counting as
    # handled: e.g. a Job create the API refused, shown in status, retried ever more slowly.
    rate_limited: bool = False


class Backoff:
    """Per-key exponential backoff with jitter (client-go's ItemExponentialFailureRateLimiter)."""

    def __init__(
        self, base: float = 0.5, cap: float = 300.0, rng: random.Random | None = None
    ) -> None:
        self.base, self.cap = base, cap
        self.failures: dict[str, int] = {}
        self.rng = rng or random.Random()

    def when(self, key: str) -> float:
        n = self.failures.get(key, 0)
        self.failures[key] = n + 1
        delay = min(self.cap, self.base * (2**n))
        return float(delay * (0.5 + self.rng.random() / 2))  # jitter: never two keys in lock-step

    def forget(self, key: str) -> None:
        self.failures.pop(key, None)

    def count(self, key: str) -> int:
        return self.failures.get(key, 0)


class WorkQueue:
    def __init__(self, clock: Clock = time.monotonic, backoff: Backoff | None = None) -> None:
        self.clock = clock
        self.backoff = backoff or Backoff()
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._delayed: list[tuple[float, str]] = []  # heap of (due, key), lazily pruned
        self._due: dict[str, float] = {}
        self._ready = asyncio.Event()
        self._timer_changed = asyncio.Event()
        self.last_progress = clock()
        self.started_at: dict[str, float] = {}  # key -> when its current processing began
        self._enqueued_at: dict[str, float] = {}
        self.shutting_down = False

    # -- adding ---------------------------------------------------------------------------

    def add(self, key: str, urgent: bool = False) -> None:
        """Queue `key` once; `urgent` keys (just granted a slot) go to the front."""
        self._due.pop(key, None)  # served now: a pending delay is moot
        if key in self._dirty:
            if urgent and key in self._enqueued_at and self._queue and self._queue[0] != key:
                self._queue.remove(key)  # O(n), but only for the few keys granted a slot
                self._queue.appendleft(key)
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # requeued by done()
        if urgent:
            self._queue.appendleft(key)
        else:
            self._queue.append(key)
        self._enqueued_at.setdefault(key, self.clock())
        self._ready.set()

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        due = self.clock() + delay
        current = self._due.get(key)
        if current is not None and current <= due:
            return
        self._due[key] = due
        heapq.heappush(self._delayed, (due, key))
        self._timer_changed.set()

    def add_rate_limited(self, key: str) -> float:
        delay = self.backoff.when(key)
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        """Reset the key's backoff (after a success)."""
        self.backoff.forget(key)

    def drop(self, key: str) -> None:
        """The object is gone: no backoff, no pending timer (a queued entry still runs once)."""
        self.backoff.forget(key)
        self._due.pop(key, None)

    # -- serving --------------------------------------------------------------------------

    def _promote_due(self) -> float | None:
        """Move due timers into the queue; seconds until the next one (None: none)."""
        now = self.clock()
        while self._delayed:
            due, key = self._delayed[0]
            if self._due.get(key) != due:
                heapq.heappop(self._delayed)  # superseded or served
                continue
            if due > now:
                return due - now
            heapq.heappop(self._delayed)
            del self._due[key]
            self.add(key)
        return None

    async def get(self) -> str:
        while True:
            self._promote_due()
            if self._queue:
                key = self._queue.popleft()
                self._enqueued_at.pop(key, None)
                self._dirty.discard(key)
                self._processing.add(key)
                self.started_at[key] = self.clock()
                return key
            self._ready.clear()
            await self._ready.wait()

    def done(self, key: str) -> None:
        self._processing.discard(key)
        self.started_at.pop(key, None)
        self.last_progress = self.clock()
        if key in self._dirty:
            self._queue.append(key)
            self._enqueued_at.setdefault(key, self.clock())
            self._ready.set()

    async def run_timers(self) -> None:
        """Wake the workers when delayed keys fall due."""
        while not self.shutting_down:
            wait = self._promote_due()
            self._timer_changed.clear()
            timeout = 3600.0 if wait is None else max(wait, 0.001)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_changed.wait(), timeout=timeout)

    def prioritise(self, first: Callable[[str], bool]) -> None:
        """Put the waiting keys `first` selects before the others, each group in its order."""
        keys = list(self._queue)
        self._queue = deque([k for k in keys if first(k)] + [k for k in keys if not first(k)])

    # -- observing ------------------------------------------------------------------------

    def depth(self) -> int:
        return len(self._queue)

    def delayed(self) -> int:
        return len(self._due)

    def is_processing(self, key: str) -> bool:
        return key in self._processing

    def stalled_for(self) -> float:
        """Seconds the queue has had work waiting, or one key running, without progress."""
        now = self.clock()
        waiting = 0.0
        if self._queue:
            first = self._enqueued_at.get(self._queue[0], now)
            waiting = now - max(self.last_progress, first)
        running = now - min(self.started_at.values()) if self.started_at else 0.0
        return max(waiting, running, 0.0)


async def serve(
    queue: WorkQueue,
    reconcile: Callable[[str], Awaitable[Result]],
    on_error: Callable[[str, BaseException], None] | None = None,
) -> None:
    """One worker: take a key, reconcile it, requeue as it asks or back off on errors."""
    while not queue.shutting_down:
        key = await queue.get()
        try:
            result = await reconcile(key)
        except asyncio.CancelledError:
            queue.done(key)
            raise
        except Exception as exc:
            delay = queue.add_rate_limited(key)
            if on_error is not None:
                on_error(key, exc)
            log.debug("reconcile of %s failed (retry in %.1f s): %s", key, delay, exc)
        else:
            if result.rate_limited:
                queue.add_rate_limited(key)
            else:
                queue.forget(key)
                if result.requeue_after is not None:
                    queue.add_after(key, result.requeue_after)
        finally:
            if key in queue._processing:
                queue.done(key)
