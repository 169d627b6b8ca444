"""Delivering notifications: in the background, through the address guard, with retries.

A delivery never holds a reconcile worker: `Notifier.step` starts it as a task (like
s3ops.py) and the task enqueues its ClipJob twice at most: after the first failed attempt
(status says Retrying) and when it ends. At most 4 requests run at once per host.

The address guard is the one sources and S3 endpoints go through (endpoints.py): the
host is resolved, every address is checked, and the connection goes to exactly those
checked addresses (a pinned resolver), so a DNS answer that changes between the check
and the connect cannot move the request into the cluster. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from kubernetes.client.exceptions import ApiException
from yarl import URL

from . import metrics
from .config import OperatorConfig
from .endpoints import _forbidden
from .kube import Kube
from .notify import (
    DELIVERED,
    RETRYING,
    Delivery,
    Target,
    backoff_delay,
    build_event,
    classify,
    encode_event,
    retry_after,
    shown_url,
    signed_headers,
    target_of,
)
from .plan import Facts
from .status import now_iso, parse_time, truncate

log = logging.getLogger("clip_operator.webhook")
PER_HOST = 4
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressRefused(Exception):
    """The webhook's host is (or resolves to) an address the operator does not allow."""


class _PinnedResolver(AbstractResolver):
    """Answers only with addresses the guard checked; never resolves anything itself."""

    def __init__(self) -> None:
        self.pins: dict[str, list[str]] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addrs = self.pins.get(host.rstrip(".").lower())
        if not addrs:
            raise OSError(f"{host} was not checked by the address guard")
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in addrs
        ]

    async def close(self) -> None:
        return None


def allowed_rules(entries: list[str]) -> tuple[set[str], list[Network]]:
    """CLIP_OPERATOR_NOTIFY_ALLOWED_HOSTS: host names and CIDRs."""
    hosts: set[str] = set()
    nets: list[Network] = []
    for entry in entries:
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            hosts.add(entry.rstrip(".").lower())
    return hosts, nets


def _refused(addr: str, private_ok: list[Network]) -> bool:
    """endpoints.py's check (the IPv4 inside NAT64, 6to4 and Teredo addresses included)."""
    return _forbidden(addr, private_ok)


async def checked_addresses(
    url: str, hosts: set[str], nets: list[Network], trusted: bool, timeout: float
) -> tuple[str, list[str]]:
    """(host, addresses) for the URL, every address checked; raises AddressRefused."""
    parts = URL(url)
    host = (parts.raw_host or "").rstrip(".").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"{shown_url(url)} is not an http(s) URL with a host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout
    )  # an IP literal comes back as itself
    addrs = sorted({str(info[4][0]) for info in infos})
    # A host the operator named (its default webhook, an allowed name) may be private;
    # link-local and metadata addresses never are reachable.
    private_ok: list[Network] = (
        [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
        if trusted or host in hosts
        else nets
    )
    for addr in addrs:
        if _refused(addr, private_ok):
            raise AddressRefused(
                f"{shown_url(url)} resolves to {addr}, a private, loopback, link-local or "
                "metadata address; nothing was sent (the operator allows such hosts only "
                "when listed in CLIP_OPERATOR_NOTIFY_ALLOWED_HOSTS / Helm value "
                "notify.allowedHosts)"
            )
    return host, addrs


class Notifier:
    def __init__(self, kube: Kube, config: OperatorConfig, on_done: Callable[[str], None]) -> None:
        self.kube, self.config, self.on_done = kube, config, on_done
        self.default: Target | None = None
        if config.notify_url:
            ns, _, name = (config.notify_secret or "").partition("/")
            self.default = Target(config.notify_url, ns or None, name or None, trusted=True)
        self.hosts, self.nets = allowed_rules(config.notify_allowed_hosts)
        self._running: dict[str, asyncio.Task[Delivery]] = {}
        self._done: dict[str, Delivery] = {}
        self._per_host: dict[str, asyncio.Semaphore] = {}
        self._resolver = _PinnedResolver()
        self._session: aiohttp.ClientSession | None = None

    # -- the controller's side ----------------------------------------------------------

    def step(self, cj: dict[str, Any], facts: Facts) -> bool:
        """Fill facts.notification from the delivery; start one if none. True = filled."""
        uid = cj["metadata"]["uid"]
        out = self._done.get(uid)
        if out is not None:
            facts.notification = out
            return True
        if uid not in self._running:
            self._start(cj)
        return False

    def settle(self, uid: str, out: Delivery) -> None:
        """The outcome reached status (or needed no write): forget it."""
        if self._done.get(uid) is out:
            del self._done[uid]

    def forget(self, uid: str) -> None:
        task = self._running.pop(uid, None)
        if task is not None:
            task.cancel()
        self._done.pop(uid, None)

    def running(self) -> int:
        return len(self._running)

    async def close(self) -> None:
        for uid in list(self._running):
            self.forget(uid)
        if self._session is not None:
            await self._session.close()

    def _start(self, cj: dict[str, Any]) -> None:
        status = cj.get("status") or {}
        target = target_of(cj, self.default)
        if target is None:
            return
        uid = cj["metadata"]["uid"]
        phase = str(status.get("phase"))
        body = encode_event(build_event(cj, self.config.url_policy))
        previous = status.get("notification") or {}
        before = int(previous.get("attempts") or 0) if previous.get("phase") == phase else 0
        # Retries end a fixed time after the ClipJob finished, restarts or not.
        finished = parse_time(status.get("completionTime"))
        end = (finished.timestamp() if finished else time.time()) + self.config.notify_retry_seconds
        task = asyncio.get_running_loop().create_task(
            self._deliver(uid, cj["metadata"]["namespace"], target, phase, body, before, end),
            name=f"notify-{uid}",
        )
        self._running[uid] = task
        task.add_done_callback(lambda t: self._finished(uid, phase, t))

    def _report(self, uid: str, out: Delivery) -> None:
        self._done[uid] = out
        self.on_done(uid)

    def _finished(self, uid: str, phase: str, task: asyncio.Task[Delivery]) -> None:
        if self._running.get(uid) is not task:
            return
        del self._running[uid]
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a bug, not the receiver: status says so, nothing re-sent
            log.error("notification of ClipJob uid %s failed: %r", uid, exc)
            out = Delivery(phase, "GaveUp", f"internal error: {exc!r}")
        else:
            out = task.result()
        result = {
            DELIVERED: "delivered",
            "GaveUp": "gave_up",
            "Rejected": "rejected",
        }.get(out.reason, "refused")
        metrics.NOTIFICATIONS_TOTAL.labels(result).inc()
        if out.seconds is not None:
            metrics.NOTIFICATION_SECONDS.observe(out.seconds)
        self._report(uid, out)

    # -- the delivery -------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=self._resolver, use_dns_cache=False, limit=256, force_close=True
            )
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def _signing_key(self, namespace: str, target: Target) -> bytes | Delivery | None:
        if not target.secret_name:
            return None
        where = target.secret_namespace or namespace
        setting = "spec.notify.secretRef" if not target.trusted else "CLIP_OPERATOR_NOTIFY_SECRET"
        try:
            data = await self.kube.read_secret(where, target.secret_name)
        except ApiException as exc:
            if exc.status == 404:
                return Delivery(
                    "",
                    "SecretNotFound",
                    f"the Secret {target.secret_name!r} named by {setting} does not exist in "
                    f"namespace {where}; nothing was sent (create it with the key "
                    f"{target.secret_key!r}, then recreate the ClipJob to notify again)",
                )
            if exc.status == 403:
                return Delivery(
                    "",
                    "SecretForbidden",
                    f"the operator may not read the Secret {target.secret_name!r} in "
                    f"namespace {where}; nothing was sent (list the namespace in the Helm "
                    "value rbac.tenantSecretNamespaces)",
                )
            raise
        value = data.get(target.secret_key)
        if not value:
            return Delivery(
                "",
                "SecretKeyMissing",
                f"the Secret {target.secret_name!r} in namespace {where} has no key "
                f"{target.secret_key!r} for {setting}; nothing was sent",
            )
        return value.encode()

    async def _deliver(
        self,
        uid: str,
        namespace: str,
        target: Target,
        phase: str,
        body: bytes,
        before: int,
        end: float,
    ) -> Delivery:
        started = time.monotonic()
        shown = shown_url(target.url)
        attempts, code, last_at = before, None, None
        key: bytes | None = None
        failures = 0
        while True:
            problem, wait_hint = "", None
            try:
                if target.secret_name and key is None:
                    found = await self._signing_key(namespace, target)
                    if isinstance(found, Delivery):
                        return Delivery(phase, found.reason, found.message, attempts)
                    key = found
                host, addrs = await checked_addresses(
                    target.url,
                    self.hosts,
                    self.nets,
                    target.trusted,
                    self.config.notify_connect_timeout_seconds,
                )
            except AddressRefused as exc:
                return Delivery(phase, "AddressRefused", str(exc), attempts)
            except ValueError as exc:
                return Delivery(phase, "InvalidNotify", str(exc), attempts)
            except ApiException as exc:
                problem = f"reading the signing Secret failed (HTTP {exc.status}: {exc.reason})"
            except (OSError, TimeoutError) as exc:
                problem = f"{shown} does not resolve ({exc or type(exc).__name__})"
            else:
                if len(self._resolver.pins) > 1024:
                    self._resolver.pins.clear()
                self._resolver.pins[host] = addrs
                attempts += 1
                last_at = now_iso(datetime.now(UTC))
                problem, code, wait_hint, verdict = await self._attempt(host, target, key, body)
                if verdict == "delivered":
                    took = time.monotonic() - started
                    message = f"delivered to {shown}: HTTP {code}"
                    return Delivery(phase, DELIVERED, message, attempts, last_at, code, took)
                if verdict == "reject":
                    return Delivery(phase, "Rejected", problem, attempts, last_at, code)
            failures += 1
            wait = wait_hint if wait_hint is not None else backoff_delay(failures, random.random())
            if time.time() + wait > end:
                text = f"{problem}; gave up after {attempts} attempts (retry time ran out)"
                return Delivery(phase, "GaveUp", text, attempts, last_at, code)
            if failures == 1:  # status says Retrying once, not once per attempt
                until = now_iso(datetime.fromtimestamp(end, UTC))
                text = f"{problem}; retrying with backoff until {until}"
                self._report(uid, Delivery(phase, RETRYING, text, attempts, last_at, code))
            await asyncio.sleep(wait)

    async def _attempt(
        self, host: str, target: Target, key: bytes | None, body: bytes
    ) -> tuple[str, int | None, float | None, str]:
        """One POST: (problem, HTTP code, Retry-After, verdict delivered|retry|reject)."""
        shown = shown_url(target.url)
        if len(self._per_host) > 4096:  # bounded: forget hosts whose slots are not all taken
            self._per_host = {h: s for h, s in self._per_host.items() if s.locked()}
        sem = self._per_host.setdefault(host, asyncio.Semaphore(PER_HOST))
        timeout = aiohttp.ClientTimeout(
            total=self.config.notify_timeout_seconds,
            connect=self.config.notify_connect_timeout_seconds,
        )
        headers = signed_headers(key, int(time.time()), body)
        async with sem:
            try:
                async with self._client().post(
                    target.url, data=body, headers=headers, allow_redirects=False, timeout=timeout
                ) as resp:
                    text = (await resp.content.read(512)).decode(errors="replace")
                    code = resp.status
                    hint = retry_after(resp.headers.get("Retry-After"), time.time())
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                why = str(exc) or type(exc).__name__
                return f"{shown}: {truncate(why, 300)}", None, None, "retry"
        verdict = classify(code)
        answer = f"{shown} answered HTTP {code}"
        if text.strip():
            answer += f": {truncate(text, 200)}"
        if 300 <= code < 400:
            answer += " (redirects are not followed: name the final URL in spec.notify.url)"
        return answer, code, hint if verdict == "retry" else None, verdict
