"""Who holds an in-flight slot, who waits, who is next: fair between namespaces.

Slots are granted round-robin between namespaces (the namespace served longest ago goes
first, a namespace new to the queue before all others), then by `spec.priority` (higher
first), then by age (creation order, then name). A global limit caps the slots held in
total; a per-namespace cap (a default, overridable per namespace) caps each tenant, so
one namespace flooding the queue with 500 ClipJobs never keeps another's single ClipJob
waiting for more than the next free slot.

State is incremental: one heap per namespace (lazy deletion), a heap of namespaces by the
sequence number of their last grant, and the set of ClipJobs holding a slot (a running
Job, or a reservation between admission and Job creation). A grant costs O(log n), plus
O(k log k) for the k namespaces skipped because they are at their cap.

A ClipJob that cannot start right now (its Job create was refused, it is backing off) is
`withdraw`n: it leaves its queue and frees its reservation, so the next ClipJob gets the
slot instead of the blocked one holding the head of the line.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

_Key = tuple[int, str, str, str]  # (-priority, created, name, uid)


@dataclass(frozen=True)
class QueueEntry:
    """A ClipJob waiting for a slot."""

    created: str  # RFC 3339 creationTimestamp (sorts chronologically as text)
    namespace: str
    name: str
    uid: str
    priority: int = 0  # spec.priority: higher goes first within its namespace

    def key(self) -> _Key:
        return (-self.priority, self.created, self.name, self.uid)


@dataclass
class _Tenant:
    heap: list[_Key] = field(default_factory=list)
    waiting: int = 0
    holding: int = 0
    served: int = -1  # sequence number of its last grant (-1: never)


class Admission:
    def __init__(
        self,
        limit: int,
        clock: Callable[[], float] = time.monotonic,
        namespace_limit: int = 0,
        namespace_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.limit = limit  # 0: no limit
        self.namespace_limit = namespace_limit  # 0: no per-namespace cap
        self.namespace_limits = dict(namespace_limits or {})  # per-namespace overrides
        self.clock = clock
        self.granted_at: dict[str, float] = {}  # slot granted, Job not yet created
        self._waiting: dict[str, QueueEntry] = {}
        self._tenants: dict[str, _Tenant] = {}
        self._turns: list[tuple[int, int, str]] = []  # (served, arrival, namespace)
        self._in_turns: set[str] = set()
        self._arrival = itertools.count()
        self._grants = itertools.count()
        self._holder_ns: dict[str, str] = {}  # uid -> namespace of every slot holder
        self.holding: set[str] = set()  # uids with a running Job or a reservation

    # -- state changes --------------------------------------------------------------------

    def request(self, entry: QueueEntry) -> list[str]:
        """`entry` wants a slot: queue it (once). Returns the uids admitted by this call."""
        if entry.uid in self.holding:
            return []
        if self._waiting.get(entry.uid) != entry:
            self._unwait(entry.uid)
            self._waiting[entry.uid] = entry
            tenant = self._tenant(entry.namespace)
            tenant.waiting += 1
            heapq.heappush(tenant.heap, entry.key())
            self._take_turn(entry.namespace)
        return self.pump()

    def withdraw(self, uid: str) -> list[str]:
        """`uid` no longer waits and gives back any reservation; returns newly admitted uids."""
        self._unwait(uid)  # its heap entry is skipped lazily
        self._release(uid)
        self.granted_at.pop(uid, None)
        return self.pump()

    forget = withdraw

    def running(self, uid: str, active: bool, namespace: str = "") -> list[str]:
        """A Job of `uid` was seen: active Jobs hold a slot (even over the limit), others not."""
        if active:
            entry = self._waiting.get(uid)
            self._unwait(uid)
            if uid not in self.holding:
                self._hold(uid, namespace or (entry.namespace if entry else ""))
            return []
        self.granted_at.pop(uid, None)
        if uid in self.holding:
            self._release(uid)
            return self.pump()
        return []

    def pump(self) -> list[str]:
        """Grant free slots: namespace served longest ago first, then priority, then age."""
        admitted: list[str] = []
        skipped: list[tuple[int, int, str]] = []  # at their cap: back in line afterwards
        while self._turns and (self.limit <= 0 or len(self.holding) < self.limit):
            turn = heapq.heappop(self._turns)
            namespace = turn[2]
            tenant = self._tenants.get(namespace)
            entry = self._head(tenant) if tenant else None
            if tenant is None or entry is None:
                self._in_turns.discard(namespace)
                self._drop_if_idle(namespace)
                continue
            if self._at_cap(namespace, tenant):
                skipped.append(turn)
                continue
            heapq.heappop(tenant.heap)
            self._unwait(entry.uid)
            self._hold(entry.uid, namespace)
            self.granted_at[entry.uid] = self.clock()
            admitted.append(entry.uid)
            tenant.served = next(self._grants)
            heapq.heappush(self._turns, (tenant.served, next(self._arrival), namespace))
        for turn in skipped:
            heapq.heappush(self._turns, turn)
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

    def namespace_cap(self, namespace: str) -> int:
        """The in-flight cap of `namespace` (0: none besides the global limit)."""
        return self.namespace_limits.get(namespace, self.namespace_limit)

    def waiting_by_namespace(self) -> dict[str, int]:
        """How many ClipJobs wait for a slot, per namespace (for the per-namespace gauge)."""
        return {ns: t.waiting for ns, t in self._tenants.items() if t.waiting}

    def holding_by_namespace(self) -> dict[str, int]:
        """How many ClipJobs hold a slot (a Job or a reservation), per namespace."""
        return {ns: t.holding for ns, t in self._tenants.items() if t.holding}

    # -- internals ------------------------------------------------------------------------

    def _tenant(self, namespace: str) -> _Tenant:
        tenant = self._tenants.get(namespace)
        if tenant is None:
            tenant = self._tenants[namespace] = _Tenant()
        return tenant

    def _take_turn(self, namespace: str) -> None:
        if namespace not in self._in_turns:
            self._in_turns.add(namespace)
            served = self._tenants[namespace].served
            heapq.heappush(self._turns, (served, next(self._arrival), namespace))

    def _head(self, tenant: _Tenant) -> QueueEntry | None:
        """The best live entry of a tenant's heap (withdrawn entries are shed here)."""
        while tenant.heap:
            uid = tenant.heap[0][3]
            entry = self._waiting.get(uid)
            if entry is not None and entry.key() == tenant.heap[0]:
                return entry
            heapq.heappop(tenant.heap)
        return None

    def _at_cap(self, namespace: str, tenant: _Tenant) -> bool:
        cap = self.namespace_cap(namespace)
        return cap > 0 and tenant.holding >= cap

    def _unwait(self, uid: str) -> None:
        entry = self._waiting.pop(uid, None)
        if entry is None:
            return
        tenant = self._tenants[entry.namespace]
        tenant.waiting -= 1
        if len(tenant.heap) > 64 and len(tenant.heap) > 2 * tenant.waiting:
            # Shed withdrawn entries so that a long-lived queue does not grow without end.
            live = (e for e in self._waiting.values() if e.namespace == entry.namespace)
            tenant.heap = [e.key() for e in live]
            heapq.heapify(tenant.heap)

    def queued_entries(self) -> int:
        """Entries held in the queues, withdrawn ones not yet shed included (for tests)."""
        return sum(len(t.heap) for t in self._tenants.values())

    def _hold(self, uid: str, namespace: str) -> None:
        self.holding.add(uid)
        self._holder_ns[uid] = namespace
        self._tenant(namespace).holding += 1

    def _release(self, uid: str) -> None:
        if uid not in self.holding:
            return
        self.holding.discard(uid)
        namespace = self._holder_ns.pop(uid, "")
        tenant = self._tenants.get(namespace)
        if tenant is not None:
            tenant.holding -= 1
            self._drop_if_idle(namespace)

    def _drop_if_idle(self, namespace: str) -> None:
        tenant = self._tenants.get(namespace)
        if (
            tenant is not None
            and not tenant.waiting
            and not tenant.holding
            and namespace not in self._in_turns
        ):
            # Its turn history goes too: a namespace that comes back is served first,
            # which is fair: it holds nothing.
            del self._tenants[namespace]
