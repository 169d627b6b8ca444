"""The global in-flight limit, incrementally: who holds a slot, who waits, who is next.

A heap of waiting ClipJobs (creation order, then namespace/name) with lazy deletion, and
the set of ClipJobs holding a slot (a running Job, or a reservation between admission and
Job creation). Every operation is O(log n); nothing rescans the whole queue.

A ClipJob that cannot start right now (its Job create was refused, it is backing off) is
`withdraw`n: it leaves the heap and frees its reservation, so the next ClipJob gets the
slot instead of the blocked one holding the head of the line.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class QueueEntry:
    """A ClipJob waiting for a slot. Ordering is creation order with stable tie-breaks."""

    created: str  # RFC 3339 creationTimestamp (sorts chronologically as text)
    namespace: str
    name: str
    uid: str


class Admission:
    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit  # 0: no limit
        self.clock = clock
        self.granted_at: dict[str, float] = {}  # slot granted, Job not yet created
        self._heap: list[QueueEntry] = []
        self._waiting: dict[str, QueueEntry] = {}
        self.holding: set[str] = set()  # uids with a running Job or a reservation

    # -- state changes --------------------------------------------------------------------

    def request(self, entry: QueueEntry) -> list[str]:
        """`entry` wants a slot: queue it (once). Returns the uids admitted by this call."""
        if entry.uid in self.holding:
            return []
        if entry.uid not in self._waiting:
            self._waiting[entry.uid] = entry
            heapq.heappush(self._heap, entry)
        return self.pump()

    def withdraw(self, uid: str) -> list[str]:
        """`uid` no longer waits and gives back any reservation; returns newly admitted uids."""
        self._waiting.pop(uid, None)  # its heap entry is skipped lazily
        self.holding.discard(uid)
        self.granted_at.pop(uid, None)
        return self.pump()

    forget = withdraw

    def running(self, uid: str, active: bool) -> list[str]:
        """A Job of `uid` was seen: active Jobs hold a slot (even over the limit), others not."""
        if active:
            self._waiting.pop(uid, None)
            self.holding.add(uid)
            return []
        self.granted_at.pop(uid, None)
        if uid in self.holding:
            self.holding.discard(uid)
            return self.pump()
        return []

    def pump(self) -> list[str]:
        """Admit the oldest waiting ClipJobs while slots are free."""
        admitted: list[str] = []
        while self._heap and (self.limit <= 0 or len(self.holding) < self.limit):
            entry = heapq.heappop(self._heap)
            if self._waiting.get(entry.uid) != entry:
                continue  # withdrawn, or re-queued with another entry
            del self._waiting[entry.uid]
            self.holding.add(entry.uid)
            self.granted_at[entry.uid] = self.clock()
            admitted.append(entry.uid)
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._waiting):
            self._heap = list(self._waiting.values())  # shed withdrawn entries
            heapq.heapify(self._heap)
        return admitted

    def took(self, uid: str) -> float | None:
        """Seconds from granting `uid` a slot until now (its Job exists); once per grant."""
        granted = self.granted_at.pop(uid, None)
        return None if granted is None else self.clock() - granted

    # -- queries --------------------------------------------------------------------------

    def admitted(self, uid: str) -> bool:
        return uid in self.holding

    def waiting(self) -> int:
        return len(self._waiting)

    def is_waiting(self, uid: str) -> bool:
        return uid in self._waiting

    def in_flight(self) -> int:
        return len(self.holding)

    def waiting_by_namespace(self) -> dict[str, int]:
        """How many ClipJobs wait for a slot, per namespace (for the per-namespace gauge)."""
        counts: dict[str, int] = {}
        for entry in self._waiting.values():
            counts[entry.namespace] = counts.get(entry.namespace, 0) + 1
        return counts
