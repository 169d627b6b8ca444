"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

Every replica campaigns; the one whose name is in the Lease's `holderIdentity` reconciles,
the others keep watching (their cache stays warm) and do nothing else.

- **Acquire** when the Lease is free (no holder, e.g. released) or expired: its record
  has not changed for `leaseDurationSeconds` as measured on *this* replica's clock since
  it last saw it change (client-go's observedTime: no trust in other machines' clocks).
- **Renew** every retry period by an update carrying the `resourceVersion` read, so two
  replicas never both win (the API server refuses the stale one with 409).
- **Step down** when no renewal succeeded for the renew deadline (shorter than the lease
  duration, so the leader stops before anyone may take over), or when another replica is
  seen holding the Lease: stop reconciling, release the Lease if still ours, then stop
  the process (`on_lost`), like client-go's controllers: the Pod restarts as a fresh
  standby instead of carrying the state of a term that ended under it.
- **Release** on a clean shutdown: after reconciling stopped, the Lease is written with no
  holder, so a standby takes over at its next retry instead of after the lease duration.

API calls run on a thread of their own with short timeouts: a renewal never waits behind
the reconcilers' API calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from . import metrics
from .config import OperatorConfig
from .kube import Kube

log = logging.getLogger("clip_operator.leader")
MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"
SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    @classmethod
    def of(cls, config: OperatorConfig) -> LeaseSettings:
        return cls(
            namespace=config.lease_namespace or default_namespace(),
            name=config.lease_name,
            identity=default_identity(),
            lease_duration=config.lease_duration_seconds,
            renew_deadline=config.renew_deadline_seconds,
            retry_period=config.retry_period_seconds,
        )


def default_identity() -> str:
    """The Pod's name (POD_NAME, from the downward API), else host name and a random suffix."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def default_namespace() -> str:
    """The Pod's own namespace (its service account's), else `default`."""
    try:
        with open(SA_NAMESPACE, encoding="utf-8") as handle:
            return handle.read().strip() or "default"
    except OSError:
        return "default"


class LeaderElector:
    """Campaign for the Lease, run `lead()` while holding it, release it when done."""

    def __init__(
        self,
        kube: Kube,
        settings: LeaseSettings,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self.kube, self.settings = kube, settings
        self.clock, self.wall = clock, wall
        self.rng = rng or random.Random()
        self.leading = False
        self._renewed = 0.0  # our clock at the last successful acquire or renewal
        self._lease: dict[str, Any] | None = None  # the Lease as last read or written
        self._observed: dict[str, Any] | None = None  # its spec, to notice changes
        self._observed_at = 0.0  # our clock when the spec last changed
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")
        s = settings
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{s.namespace}/leases"

    # -- the API --------------------------------------------------------------------------

    async def _api(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        timeout = max(1.0, self.settings.retry_period)
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(
            self._pool, lambda: self.kube.request(method, path, body, timeout=timeout)
        )
        return await asyncio.wait_for(call, timeout + 1)

    def _record(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The spec we write to hold the Lease (acquireTime/transitions kept on a renewal)."""
        now = self.wall().strftime(MICROTIME)
        ours = spec.get("holderIdentity") == self.settings.identity
        transitions = int(spec.get("leaseTransitions") or 0)
        return {
            "holderIdentity": self.settings.identity,
            "leaseDurationSeconds": max(1, round(self.settings.lease_duration)),
            "acquireTime": spec.get("acquireTime") if ours and spec.get("acquireTime") else now,
            "renewTime": now,
            "leaseTransitions": transitions if ours else transitions + 1,
        }

    def _observe(self, lease: dict[str, Any]) -> dict[str, Any]:
        spec = dict(lease.get("spec") or {})
        if spec != self._observed:
            self._observed, self._observed_at = spec, self.clock()
        self._lease = lease
        return spec

    def holds(self) -> bool:
        """Leading, and renewed within the renew deadline: safe to write.

        Checked before every reconcile, so a leader whose process was frozen past the
        deadline (SIGSTOP, a stalled node) writes nothing before its renew loop notices.
        """
        return self.leading and self.clock() - self._renewed < self.settings.renew_deadline

    def holder(self) -> str:
        return str((self._observed or {}).get("holderIdentity") or "")

    def _held_by_other(self) -> bool:
        spec = self._observed or {}
        holder = spec.get("holderIdentity")
        if not holder or holder == self.settings.identity:
            return False
        left = self.expires_in()
        return left is not None and left > 0

    async def try_acquire_or_renew(self) -> bool:
        """One attempt (client-go's tryAcquireOrRenew); True when we hold the Lease after it."""
        # Fast path for the leader: update what it wrote last; a conflict reads afresh.
        if self.leading and self._lease is not None and await self._update(self._lease):
            return True
        try:
            lease = await self._api("GET", f"{self._path}/{self.settings.name}")
        except ApiException as exc:
            if exc.status != 404:
                raise
            return await self._create()
        self._observe(lease)
        if self._held_by_other():
            return False
        return await self._update(lease)

    async def _create(self) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.settings.name, "namespace": self.settings.namespace},
            "spec": self._record({}),
        }
        try:
            self._observe(await self._api("POST", self._path, body))
        except ApiException as exc:
            if exc.status == 409:  # another replica created it first
                return False
            raise
        return True

    async def _update(self, lease: dict[str, Any], spec: dict[str, Any] | None = None) -> bool:
        meta = lease.get("metadata") or {}
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.settings.name,
                "namespace": self.settings.namespace,
                "resourceVersion": meta.get("resourceVersion"),
            },
            "spec": spec if spec is not None else self._record(dict(lease.get("spec") or {})),
        }
        try:
            self._observe(await self._api("PUT", f"{self._path}/{self.settings.name}", body))
        except ApiException as exc:
            if exc.status == 409:  # someone wrote it since we read it
                return False
            raise
        return True

    async def release(self) -> bool:
        """Give the Lease up (client-go's release): no holder, so a standby takes it at once."""
        if self._lease is None or self.holder() != self.settings.identity:
            return False
        spec = dict(self._observed or {})
        now = self.wall().strftime(MICROTIME)
        record = {
            "leaseDurationSeconds": 1,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": int(spec.get("leaseTransitions") or 0),
        }
        try:
            released = await self._update(self._lease, record)
        except Exception as exc:
            log.warning("releasing Lease %s failed: %s", self.settings.name, exc)
            return False
        if released:
            log.info("released Lease %s/%s", self.settings.namespace, self.settings.name)
        return released

    # -- the campaign ---------------------------------------------------------------------

    async def _attempt(self) -> bool:
        try:
            return await self.try_acquire_or_renew()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("Lease %s: %s", self.settings.name, str(exc).splitlines()[0][:200])
            return False

    async def acquire(self) -> None:
        """Return once we hold the Lease.

        client-go retries every retry period with up to 120 % jitter, so it notices the
        holder's last renewal up to ~4 s late and its expiry as late again: a takeover
        ~15-24 s after the leader died. A standby here reads the Lease four times per retry
        period (one small GET each, from at most a few standbys) and tries again exactly
        when the record it saw expires, so it takes over within ~0.5 s of the lease duration
        after the last renewal, and within ~0.5 s of a release.
        """
        s = self.settings
        log.info("campaigning for Lease %s/%s as %s", s.namespace, s.name, s.identity)
        last_holder = None
        period = s.retry_period / 4
        while not await self._attempt():
            if self.holder() != last_holder:
                last_holder = self.holder()
                log.info("standing by: Lease %s is held by %s", s.name, last_holder or "nobody")
            wait = period * (1 + self.rng.random() * 0.2)
            left = self.expires_in()
            if left is not None:
                wait = min(wait, max(0.0, left) + 0.01)
            await asyncio.sleep(wait)

    def expires_in(self) -> float | None:
        """Seconds until the Lease as last seen expires by our clock (None: not held)."""
        spec = self._observed or {}
        if not spec.get("holderIdentity"):
            return None
        duration = float(spec.get("leaseDurationSeconds") or self.settings.lease_duration)
        return self._observed_at + duration - self.clock()

    async def _renew_until_lost(self, task: asyncio.Task[None]) -> str:
        """Renew every retry period while `task` runs; why leading ended."""
        s = self.settings
        self._renewed = renewed = self.clock()
        while True:
            await asyncio.wait({task}, timeout=s.retry_period)
            if task.done():
                exc = None if task.cancelled() else task.exception()
                return f"reconciling stopped: {exc!r}"
            left = s.renew_deadline - (self.clock() - renewed)
            ok = False
            with contextlib.suppress(TimeoutError):
                ok = await asyncio.wait_for(self._attempt(), timeout=max(0.1, left))
            if ok:
                self._renewed = renewed = self.clock()
            elif self._held_by_other():
                return f"Lease taken by {self.holder()}"
            elif self.clock() - renewed >= s.renew_deadline:
                return f"Lease not renewed for {s.renew_deadline:g} s"

    async def run(self, lead: Callable[[], Awaitable[None]], on_lost: Callable[[], None]) -> None:
        """Campaign, then `lead()` while holding the Lease. Cancelled: stop and release."""
        task: asyncio.Task[None] | None = None
        try:
            await self.acquire()
            self._set_leading(True)
            task = asyncio.create_task(_run(lead), name="leading")
            why = await self._renew_until_lost(task)
            log.error("stepping down: %s; stopping so a fresh standby takes this one's place", why)
            await _cancel(task)
            self._set_leading(False)
            await self.release()
            on_lost()
        finally:
            if task is not None and not task.done():
                await _cancel(task)  # reconciling stops before the Lease is given up
            if self.leading:
                self._set_leading(False)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.release(), self.settings.retry_period + 2)

    def _set_leading(self, leading: bool) -> None:
        self.leading = leading
        metrics.LEADER.set(1 if leading else 0)
        if leading:
            metrics.LEADER_TRANSITIONS.inc()
            s = self.settings
            log.info("leading: acquired Lease %s/%s as %s", s.namespace, s.name, s.identity)


async def _run(lead: Callable[[], Awaitable[None]]) -> None:
    await lead()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
