"""Self-destruct (ttlSecondsAfterFinished) and the URL refresh horizon, as decisions."""

from __future__ import annotations

from typing import Any

import pytest

from clip_operator.plan import Act, Need, Settings
from tests.unit.test_decide import SPEC, URL, cj, iso, run

S = Settings(default_bucket="clips")


def finished(
    phase: str = "Succeeded",
    completed: float = -100,
    expires: float = 3000,
    issued: float = -600,
    spec: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "completionTime": iso(completed)}
    if phase == "Succeeded":
        status.update(
            output={"bucket": "b", "key": "k"},
            url="u",
            urlExpiresAt=iso(expires),
            urlIssuedAt=iso(issued),
            reason="Succeeded",
            conditions=[{"type": "Ready", "status": "True", "lastTransitionTime": iso(-99)}],
        )
    status.update(extra)
    return cj(status, spec=spec)


def test_a_finished_clipjob_past_its_ttl_is_deleted_with_an_event() -> None:
    plan = run(finished(completed=-100, spec={**SPEC, "ttlSecondsAfterFinished": 60}))
    assert Act.DELETE_CLIPJOB in plan.actions and plan.status is None
    assert [e[1] for e in plan.events] == ["Expired"]
    failed = run(finished("Failed", completed=-100, spec={**SPEC, "ttlSecondsAfterFinished": 99}))
    assert Act.DELETE_CLIPJOB in failed.actions


def test_before_its_ttl_it_comes_back_exactly_at_its_end_of_life() -> None:
    plan = run(finished(completed=-100, spec={**SPEC, "ttlSecondsAfterFinished": 400}))
    assert Act.DELETE_CLIPJOB not in plan.actions
    assert plan.requeue_after == pytest.approx(300)  # before the URL refresh (at 2280 s)
    failed = run(finished("Failed", completed=-10, spec={**SPEC, "ttlSecondsAfterFinished": 50}))
    assert failed.requeue_after == pytest.approx(40) and Act.DELETE_CLIPJOB not in failed.actions


def test_the_operator_default_ttl_applies_when_the_spec_sets_none() -> None:
    settings = Settings(default_bucket="clips", clipjob_ttl_seconds=60)
    assert Act.DELETE_CLIPJOB in run(finished(completed=-100), settings=settings).actions
    # The spec's own value wins over the default, in both directions.
    keep = finished(completed=-100, spec={**SPEC, "ttlSecondsAfterFinished": 1000})
    assert Act.DELETE_CLIPJOB not in run(keep, settings=settings).actions


def test_no_ttl_no_deletion_and_no_extra_wakeups() -> None:
    plan = run(finished(completed=-100))
    assert Act.DELETE_CLIPJOB not in plan.actions
    assert plan.requeue_after == pytest.approx(3000 - 720)  # the URL refresh only
    assert run(finished("Failed")).requeue_after is None


def test_urls_are_refreshed_until_the_horizon_then_expire_with_one_write() -> None:
    day = 86400
    settings = Settings(default_bucket="clips", url_refresh_horizon_seconds=day)
    # Refresh due (a fifth of the life left) within the horizon: a new URL.
    assert run(finished(completed=-3600, expires=700, issued=-2900), settings=settings).need == (
        Need.URL
    )
    # Past the horizon with a URL still valid: no refresh, wake at its expiry, no write.
    late = finished(completed=-2 * day, expires=700, issued=-2900)
    plan = run(late, settings=settings)
    assert plan.need is None and plan.status is None
    assert plan.requeue_after == pytest.approx(700)
    # Expired: one write that says so and removes the dead URL, then silence.
    gone = finished(completed=-2 * day, expires=-5, issued=-3605)
    plan = run(gone, settings=settings)
    assert plan.status and plan.status["url"] is None and plan.status["reason"] == "URLExpired"
    assert "create a new ClipJob" in plan.status["message"]
    ready = [c for c in plan.status["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "False"
    written = finished(
        completed=-2 * day,
        expires=-5,
        issued=-3605,
        reason="URLExpired",
        url=None,
        conditions=plan.status["conditions"],
    )
    after = run(written, settings=settings)
    assert after.status is None and after.need is None and after.requeue_after is None


def test_a_clipjob_with_a_ttl_is_refreshed_until_its_end_of_life_whatever_the_horizon() -> None:
    settings = Settings(default_bucket="clips", url_refresh_horizon_seconds=60)
    body = finished(
        completed=-3600, expires=700, issued=-2900, spec={**SPEC, "ttlSecondsAfterFinished": 7200}
    )
    assert run(body, settings=settings).need == Need.URL
    plan = run(body, settings=settings, url=URL)
    assert plan.status and plan.status["url"] == URL[0]
    assert plan.requeue_after is not None and plan.requeue_after <= 3600
