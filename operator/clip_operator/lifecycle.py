"""Pure decisions for the end of a ClipJob's life: its download URL, then its deletion."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .cache import job_finished
from .models import InvalidSpec, Phase, parse_spec
from .plan import FINALIZER, Act, Facts, Need, Plan, Settings
from .status import build_conditions, now_iso, parse_time

URL_RETRY_FLOOR = 30.0  # never plan a refresh sooner than this after a successful one


def _ttl(cj: dict[str, Any], settings: Settings) -> int | None:
    """ttlSecondsAfterFinished, or the operator's default (None: kept). Read from the raw
    spec, so a ClipJob whose spec failed validation expires too."""
    ttl = (cj.get("spec") or {}).get("ttlSecondsAfterFinished")
    if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl >= 0:
        return ttl
    return settings.clipjob_ttl_seconds or None


def end_of_life(cj: dict[str, Any], settings: Settings, now: datetime) -> datetime | None:
    """When a finished ClipJob is to be deleted, or None: kept. Unfinished ClipJobs count
    from `now` (the caller is about to finish them)."""
    ttl = _ttl(cj, settings)
    if ttl is None:
        return None
    done = parse_time((cj.get("status") or {}).get("completionTime")) or now
    return done + timedelta(seconds=ttl)


def expired(cj: dict[str, Any], settings: Settings) -> Plan:
    """A finished ClipJob past its time to live: delete it (objects per deletionPolicy)."""
    message = (
        f"deleting the ClipJob: it finished more than {_ttl(cj, settings)} s ago "
        "(ttlSecondsAfterFinished)"
    )
    return Plan(actions=[Act.WITHDRAW, Act.DELETE_CLIPJOB], events=[("Normal", "Expired", message)])


def _past_horizon(cj: dict[str, Any], now: datetime, settings: Settings) -> bool:
    """URL refreshes stop this long after finishing for ClipJobs that live forever."""
    horizon = settings.url_refresh_horizon_seconds
    if horizon <= 0 or end_of_life(cj, settings, now) is not None:
        return False
    done = parse_time((cj.get("status") or {}).get("completionTime"))
    return done is not None and (now - done).total_seconds() > horizon


def _horizon_reached(
    cj: dict[str, Any], end: datetime | None, now: datetime, settings: Settings
) -> Plan:
    """No more refreshes: wait for the URL to expire, then say so once (one write)."""
    status = cj.get("status") or {}
    if end is not None and end > now:
        return Plan(actions=[Act.WITHDRAW], requeue_after=(end - now).total_seconds())
    plan = Plan(actions=[Act.WITHDRAW])
    if status.get("url") or status.get("reason") != "URLExpired":
        gen = cj["metadata"].get("generation", 1)
        message = (
            f"the clip is in S3 (status.output) but its download URL expired: URLs are "
            f"refreshed for {settings.url_refresh_horizon_seconds} s after the clip is made "
            "(CLIP_OPERATOR_URL_REFRESH_HORIZON_SECONDS); create a new ClipJob for a new URL"
        )
        plan.status = {
            "url": None,
            "reason": "URLExpired",
            "message": message,
            "conditions": build_conditions(
                Phase.QUEUED, "URLExpired", message, gen, status.get("conditions"), now_iso(now)
            ),
        }
        plan.events.append(("Normal", "URLExpired", message))
    return plan


def url_secret_name(cj: dict[str, Any]) -> str:
    """The Secret holding the URL under urlPolicy Secret (owned by the ClipJob)."""
    return f"{cj['metadata']['name'][:240]}-clip-url"


def _place_url(
    plan: Plan,
    cj: dict[str, Any],
    url: str,
    expires: str,
    issued: str,
    settings: Settings,
    thumbnail_url: str | None = None,
) -> dict[str, Any]:
    """Status fields for a fresh URL: the URL itself, or the name of the Secret holding it
    (the thumbnail's URL, spec.thumbnail, goes into status beside the clip's only)."""
    fields: dict[str, Any] = {"urlExpiresAt": expires, "urlIssuedAt": issued}
    if settings.url_policy == "Secret":
        fields["urlSecretName"] = url_secret_name(cj)
        plan.url_secret = (url, expires)
    else:
        fields["url"] = url
        if thumbnail_url:
            fields["thumbnailUrl"] = thumbnail_url
    return fields


def with_url(
    plan: Plan, cj: dict[str, Any], facts: Facts, now: datetime, settings: Settings
) -> Plan:
    """Finish a Succeeded plan: Ready=True only with a working URL (or with no URL by policy)."""
    assert plan.status is not None
    if settings.url_policy == "None":
        return plan
    if facts.url is None and facts.url_error is None:
        plan.need = Need.URL
        return plan
    gen = cj["metadata"].get("generation", 1)
    previous = (cj.get("status") or {}).get("conditions")
    if facts.url is not None:
        url, expires, issued = facts.url
        plan.status.update(
            _place_url(plan, cj, url, expires, issued, settings, facts.thumbnail_url)
        )
        plan.requeue_after = _refresh_in(expires, issued, now, settings)
        plan.events.append(("Normal", "Succeeded", plan.status["message"]))
        return plan
    message = f"the clip is in S3 but no download URL could be signed: {facts.url_error}"
    plan.status["conditions"] = build_conditions(
        Phase.QUEUED, "PresignFailed", message, gen, previous, now_iso(now)
    )
    plan.events.append(("Warning", "PresignFailed", message))
    plan.rate_limited = True
    return plan


def _refresh_in(expires: str, issued: str, now: datetime, settings: Settings) -> float:
    end, start = parse_time(expires), parse_time(issued)
    if end is None or start is None:
        return URL_RETRY_FLOOR
    life = (end - start).total_seconds()
    due = end.timestamp() - life * settings.url_refresh_fraction
    return max(URL_RETRY_FLOOR, due - now.timestamp())


def keep_url(cj: dict[str, Any], facts: Facts, now: datetime, settings: Settings) -> Plan:
    """A Succeeded ClipJob: refresh its URL when a fraction of its life is left."""
    status = cj.get("status") or {}
    plan = Plan(actions=[Act.WITHDRAW])
    if not status.get("output"):
        return plan
    if settings.url_policy == "None":
        if status.get("url"):
            plan.status = {"url": None, "urlExpiresAt": None, "urlIssuedAt": None}
            if status.get("thumbnailUrl"):
                plan.status["thumbnailUrl"] = None
        return plan
    expires, issued = status.get("urlExpiresAt"), status.get("urlIssuedAt")
    end = parse_time(expires)
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    placed = status.get("urlSecretName" if settings.url_policy == "Secret" else "url")
    if end is not None and ready and placed and _past_horizon(cj, now, settings):
        return _horizon_reached(cj, end, now, settings)
    if status.get("reason") == "URLExpired":
        return plan  # past the horizon: stays as it is
    if end is not None and ready and placed:
        start = parse_time(issued)
        if start is None:  # written by an older operator: assume the full lifetime
            wait = end.timestamp() - now.timestamp() - 60
        else:
            life = (end - start).total_seconds()
            wait = end.timestamp() - life * settings.url_refresh_fraction - now.timestamp()
        if wait > 0:
            plan.requeue_after = wait
            return plan
    if facts.url is None and facts.url_error is None:
        plan.need = Need.URL
        return plan
    gen = cj["metadata"].get("generation", 1)
    if facts.url is not None:
        url, new_expires, new_issued = facts.url
        plan.status = _place_url(
            plan, cj, url, new_expires, new_issued, settings, facts.thumbnail_url
        )
        if settings.url_policy == "Secret" and status.get("url"):
            plan.status["url"] = None  # the policy changed: the URL leaves status
        if not ready:
            message = "clip is ready"
            plan.status.update(reason="Succeeded", message=message)
            plan.status["conditions"] = build_conditions(
                Phase.SUCCEEDED,
                "Succeeded",
                message,
                gen,
                status.get("conditions"),
                now_iso(now),
            )
        plan.requeue_after = _refresh_in(new_expires, new_issued, now, settings)
        return plan
    message = f"refreshing the download URL failed: {facts.url_error}"
    still_valid = end is not None and end > now
    if not still_valid and ready:
        plan.status = {
            "conditions": build_conditions(
                Phase.QUEUED,
                "PresignFailed",
                message,
                gen,
                status.get("conditions"),
                now_iso(now),
            )
        }
    if status.get("message") != message:
        plan.events.append(("Warning", "PresignFailed", message))
    plan.rate_limited = True
    return plan


def deleting(
    cj: dict[str, Any],
    job: dict[str, Any] | None,
    facts: Facts,
    now: datetime,
    settings: Settings,
) -> Plan:
    """A ClipJob being deleted: stop its Job, then delete its objects, then let it go."""
    meta = cj["metadata"]
    if FINALIZER not in (meta.get("finalizers") or []):
        return Plan(actions=[Act.WITHDRAW])
    try:
        spec = parse_spec(cj.get("spec"))
    except InvalidSpec:
        return Plan(actions=[Act.WITHDRAW, Act.REMOVE_FINALIZER])
    if not ((spec.storage and spec.storage.bucket) or settings.default_bucket):
        return Plan(actions=[Act.WITHDRAW, Act.REMOVE_FINALIZER])
    if job is not None and not job_finished(job):
        # Foreground: the Job stays until its Pods are gone, so no upload can land after
        # the object delete below. Its DELETED event brings us back.
        if job["metadata"].get("deletionTimestamp"):
            return Plan(requeue_after=5)
        return Plan(actions=[Act.DELETE_JOB], requeue_after=5)
    if settings.dedupe != "Off" and facts.object_users is None:
        return Plan(need=Need.OBJECT_USERS)
    if facts.object_users:
        users = ", ".join(sorted(facts.object_users)[:5])
        return Plan(
            actions=[Act.WITHDRAW, Act.REMOVE_FINALIZER],
            events=[("Normal", "ObjectKept", f"kept the clip in S3: ClipJob {users} uses it too")],
        )
    if facts.deleted_objects:
        return Plan(
            actions=[Act.WITHDRAW, Act.REMOVE_FINALIZER],
            events=[("Normal", "ObjectDeleted", "deleted the clip from S3")],
        )
    if facts.delete_error is None:
        return Plan(need=Need.DELETE_OBJECTS)
    error, retryable = facts.delete_error
    deleted_at = parse_time(meta.get("deletionTimestamp")) or now
    waited = (now - deleted_at).total_seconds()
    if retryable and waited < settings.delete_retry_limit_seconds:
        text = (
            f"could not delete the clip from S3 ({error}); retrying for up to "
            f"{settings.delete_retry_limit_seconds} s after deletion"
        )
        plan = Plan(rate_limited=True)
        if (cj.get("status") or {}).get("reason") != "DeleteFailed":
            plan.status = {"reason": "DeleteFailed", "message": text}
            plan.events.append(("Warning", "DeleteFailed", text))
        return plan
    why = f"after {int(waited)} s" if retryable else "(not retryable)"
    return Plan(
        actions=[Act.WITHDRAW, Act.REMOVE_FINALIZER],
        events=[
            ("Warning", "DeleteAbandoned", f"gave up deleting the clip from S3 {why}: {error}")
        ],
    )
