"""Notifications of a finished ClipJob: what is sent, how it is signed, what status says.

Pure (no I/O, no clock reads): the CloudEvent, its HMAC signature, the retry schedule and
the decision step that `decide` runs for a terminal ClipJob. Delivery itself (the
address guard, HTTP, retries in the background) is in webhook.py.

Why a decision step and not a hook where the terminal phase is first written: the need
is derived from status alone ("terminal, a webhook configured, status.notification not
final for this phase"), so an operator restarted mid-delivery sends again (at least
once) and one that finds `delivered: true` never does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from .models import GROUP, PLURAL, VERSION
from .plan import Facts, Need, Plan, Settings
from .status import parse_time

SIGNATURE_HEADER = "X-Clip-Signature"
TIMESTAMP_HEADER = "X-Clip-Timestamp"
CONTENT_TYPE = "application/cloudevents+json"
EVENT_TYPES = {
    "Succeeded": "io.mememaker.clipjob.succeeded",
    "Failed": "io.mememaker.clipjob.failed",
}
DEFAULT_SECRET_KEY = "signingKey"
SIGNATURE_TOLERANCE_SECONDS = 300  # receivers refuse timestamps further off than this

RETRYING = "Retrying"
DELIVERED = "Delivered"
# Reasons that end a delivery: nothing more is sent for this phase.
FINAL_REASONS = frozenset(
    {
        DELIVERED,
        "GaveUp",  # retryable failures until the retry time ran out
        "Rejected",  # the receiver answered 3xx or 4xx (not 408/429): retrying cannot help
        "AddressRefused",  # the address guard: private, link-local or metadata address
        "InvalidNotify",  # not an http(s) URL with a host
        "SecretNotFound",
        "SecretForbidden",
        "SecretKeyMissing",
    }
)
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
STALE_GRACE = 300.0  # ClipJobs that finished longer than the retry window + this ago


@dataclass(frozen=True)
class Target:
    """Where a ClipJob's notification goes and which Secret holds its signing key."""

    url: str
    secret_namespace: str | None = None
    secret_name: str | None = None
    secret_key: str = DEFAULT_SECRET_KEY
    trusted: bool = False  # the operator's default webhook: its host may be private


@dataclass(frozen=True)
class Delivery:
    """What a delivery came to (final), or how it is going (reason Retrying)."""

    phase: str
    reason: str
    message: str
    attempts: int = 0
    last_attempt_at: str | None = None
    response_code: int | None = None
    seconds: float | None = None  # from the delivery's start to the receiver's 2xx

    @property
    def delivered(self) -> bool:
        return self.reason == DELIVERED

    @property
    def final(self) -> bool:
        return self.reason in FINAL_REASONS

    def to_status(self) -> dict[str, Any]:
        """status.notification; None clears a field (a merge patch merges nested objects)."""
        return {
            "phase": self.phase,
            "delivered": self.delivered,
            "reason": self.reason,
            "attempts": self.attempts,
            "lastAttemptAt": self.last_attempt_at,
            "responseCode": self.response_code,
            "message": self.message,
        }


def target_of(cj: dict[str, Any], default: Target | None) -> Target | None:
    """spec.notify, else the operator's default webhook, else None (no notification)."""
    raw = (cj.get("spec") or {}).get("notify")
    if isinstance(raw, dict) and raw.get("url"):
        found = raw.get("secretRef")
        ref: dict[str, Any] = found if isinstance(found, dict) else {}
        return Target(
            url=str(raw["url"]),
            secret_namespace=cj["metadata"].get("namespace") if ref.get("name") else None,
            secret_name=str(ref["name"]) if ref.get("name") else None,
            secret_key=str(ref.get("key") or DEFAULT_SECRET_KEY),
        )
    return default


def shown_url(url: str) -> str:
    """scheme://host[:port] only: a webhook URL's path or query may carry a token."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
    except ValueError:
        return "(unparseable URL)"


def notification_settled(cj: dict[str, Any], settings: Settings, now: datetime) -> bool:
    """True when nothing (more) is to be sent for this ClipJob's current phase."""
    status = cj.get("status") or {}
    phase = status.get("phase")
    if phase not in EVENT_TYPES:
        return True
    if target_of(cj, None) is None and not settings.notify_url:
        return True
    current = status.get("notification") or {}
    if current.get("phase") == phase:
        return current.get("reason") in FINAL_REASONS
    # Nothing tried yet, and it finished before the retry window: a webhook configured
    # later (or an operator upgraded to one that notifies) does not announce the whole
    # history at once, and a URL that never got signed does not hold the ClipJob forever.
    finished = parse_time(status.get("completionTime"))
    age = (now - finished).total_seconds() if finished is not None else 0.0
    return age > settings.notify_retry_seconds + STALE_GRACE


def _ready(status: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def notify_step(
    plan: Plan, cj: dict[str, Any], facts: Facts, now: datetime, settings: Settings
) -> Plan:
    """A terminal ClipJob whose status is settled: deliver its notification (once)."""
    if plan.need is not None or plan.status is not None:
        return plan  # status first (a URL to place): the notification carries it
    status = cj.get("status") or {}
    phase = status.get("phase")
    if notification_settled(cj, settings, now):
        return plan
    if phase == "Succeeded" and settings.url_policy != "None" and not _ready(status):
        return plan  # the URL is not signed yet: notify once it is
    current = status.get("notification") or {}
    out: Delivery | None = facts.notification
    if out is None or out.phase != phase:
        plan.need = Need.NOTIFY
        return plan
    target = shown_url((target_of(cj, None) or Target(settings.notify_url or "")).url)
    if out.final:
        plan.status = {"notification": out.to_status()}
        if out.delivered:
            plan.events.append(
                ("Normal", "NotificationDelivered", f"{out.message} (attempts: {out.attempts})")
            )
        else:
            plan.events.append(("Warning", f"Notification{out.reason}", out.message))
    elif current.get("phase") != phase or current.get("reason") != RETRYING:
        plan.status = {"notification": out.to_status()}  # once: not one write per attempt
        plan.events.append(("Warning", "NotificationRetrying", f"{target}: {out.message}"))
    return plan


# -- the CloudEvent ----------------------------------------------------------------------


def event_id(cj: dict[str, Any], phase: str) -> str:
    """Stable per ClipJob and phase: a receiver drops retries and re-sends by this id."""
    return f"{cj['metadata']['uid']}.{phase.lower()}"


def build_event(cj: dict[str, Any], url_policy: str) -> dict[str, Any]:
    """The CloudEvents 1.0 structured-mode event for the ClipJob's terminal status."""
    meta, status = cj["metadata"], cj.get("status") or {}
    phase = str(status.get("phase"))
    namespace, name = meta.get("namespace"), meta.get("name")
    data: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": meta.get("uid"),
        "phase": phase,
        "reason": status.get("reason"),
        "message": status.get("message"),
        "completionTime": status.get("completionTime"),
    }
    if status.get("output"):
        data["output"] = status["output"]
    if status.get("timings"):
        data["timings"] = status["timings"]
    if url_policy == "Status" and status.get("url"):
        data["url"] = status["url"]
        data["urlExpiresAt"] = status.get("urlExpiresAt")
    elif url_policy == "Secret" and status.get("urlSecretName"):
        data["urlSecretName"] = status["urlSecretName"]
        data["urlExpiresAt"] = status.get("urlExpiresAt")
    return {
        "specversion": "1.0",
        "id": event_id(cj, phase),
        "source": f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}",
        "type": EVENT_TYPES[phase],
        "subject": name,
        "time": status.get("completionTime") or meta.get("creationTimestamp"),
        "datacontenttype": "application/json",
        "data": {k: v for k, v in data.items() if v is not None},
    }


def encode_event(event: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact, keys sorted, identical on every retry."""
    return json.dumps(event, sort_keys=True, separators=(",", ":")).encode()


# -- signing -----------------------------------------------------------------------------


def signature(key: bytes, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(key, "<timestamp>." + body)."""
    mac = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(key: bytes | None, timestamp: int, body: bytes) -> dict[str, str]:
    headers = {"Content-Type": CONTENT_TYPE}
    if key is not None:
        headers[TIMESTAMP_HEADER] = str(timestamp)
        headers[SIGNATURE_HEADER] = signature(key, timestamp, body)
    return headers


def verify(
    key: bytes,
    body: bytes,
    timestamp: str,
    sig: str,
    now: float,
    tolerance: float = SIGNATURE_TOLERANCE_SECONDS,
) -> bool:
    """The receiver's check (README: Notifications): fresh timestamp, matching signature."""
    try:
        stamp = int(timestamp)
    except ValueError:
        return False
    if abs(now - stamp) > tolerance:
        return False
    return hmac.compare_digest(signature(key, stamp, body), sig)


# -- retries -----------------------------------------------------------------------------


def classify(code: int) -> str:
    """'delivered', 'retry' (408, 429, 5xx) or 'reject' (3xx and other 4xx)."""
    if 200 <= code < 300:
        return "delivered"
    if code in (408, 429) or code >= 500:
        return "retry"
    return "reject"


def backoff_delay(failures: int, rand: float) -> float:
    """Wait after `failures` failed attempts: exponential (1, 2, 4 ... 60 s), 50-100 % of it."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** max(0, failures - 1))
    return ceiling * (0.5 + 0.5 * min(1.0, max(0.0, rand)))


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(BACKOFF_CAP_SECONDS, float(value))
    try:
        when = float(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError):
        return None
    return min(BACKOFF_CAP_SECONDS, max(0.0, when - now))
