"""The global in-flight limit: which waiting ClipJobs may start now, in creation order."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class QueueEntry:
    """A ClipJob waiting for a slot. Ordering is creation order with stable tie-breaks."""

    created: str  # RFC 3339 creationTimestamp (sorts chronologically as text)
    namespace: str
    name: str
    uid: str


def free_slots(limit: int, in_flight: int) -> int | None:
    """Slots left, or None for no limit (limit 0)."""
    if limit <= 0:
        return None
    return max(0, limit - in_flight)


def admit(waiting: list[QueueEntry], in_flight: int, limit: int) -> list[QueueEntry]:
    """The waiting entries that may start now: the oldest first, as many as slots allow."""
    ordered = sorted(waiting)
    slots = free_slots(limit, in_flight)
    return ordered if slots is None else ordered[:slots]


def position(waiting: list[QueueEntry], uid: str) -> int | None:
    """1-based place of a ClipJob in the queue (for its status message)."""
    for index, entry in enumerate(sorted(waiting), start=1):
        if entry.uid == uid:
            return index
    return None
