"""Notifications, pure parts: the CloudEvent, its signature, the retry schedule, and the
decision a finished ClipJob gets (through `decide`, as the controller calls it)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clip_operator.decide import decide
from clip_operator.notify import (
    Delivery,
    backoff_delay,
    build_event,
    classify,
    encode_event,
    retry_after,
    signature,
    signed_headers,
    verify,
)
from clip_operator.plan import Facts, Need, Settings

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
HOOK = {"url": "https://hooks.example.com/clips?token=t0p", "secretRef": {"name": "k"}}
READY = {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-30T11:59:00Z"}
S = Settings(default_bucket="clips")


def finished(phase: str = "Succeeded", notify: Any = HOOK, **status: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"source": {"url": "http://e.test/v.mp4"}, "start": "0", "end": "10"}
    if notify:
        spec["notify"] = notify
    base: dict[str, Any] = {
        "phase": phase,
        "reason": "Succeeded" if phase == "Succeeded" else "SourceNotFound",
        "message": "clip is ready" if phase == "Succeeded" else "HTTP 404",
        "completionTime": "2026-11-30T11:59:30Z",
        "conditions": [{**READY, "status": "True" if phase == "Succeeded" else "False"}],
    }
    if phase == "Succeeded":
        base.update(
            output={"bucket": "clips", "key": "ns/a.mp4", "sizeBytes": 11},
            url="https://s3.example.com/clips/ns/a.mp4?X-Amz-Signature=x",
            urlExpiresAt="2026-11-30T13:00:00Z",
            urlIssuedAt="2026-11-30T12:00:00Z",
        )
    base.update(status)
    return {
        "metadata": {
            "name": "a",
            "namespace": "ns",
            "uid": "u1",
            "generation": 1,
            "creationTimestamp": "2026-11-30T11:58:00Z",
        },
        "spec": spec,
        "status": base,
    }


# -- the event -----------------------------------------------------------------------------


def test_event_is_cloudevents_structured_with_the_result() -> None:
    event = build_event(finished(), "Status")
    assert event["specversion"] == "1.0" and event["id"] == "u1.succeeded"
    assert event["source"] == "/apis/mememaker.io/v1alpha1/namespaces/ns/clipjobs/a"
    assert event["type"] == "io.mememaker.clipjob.succeeded" and event["subject"] == "a"
    assert event["time"] == "2026-11-30T11:59:30Z"
    assert event["datacontenttype"] == "application/json"
    data = event["data"]
    assert data["phase"] == "Succeeded" and data["output"]["key"] == "ns/a.mp4"
    assert data["url"].startswith("https://s3.example.com/") and data["urlExpiresAt"]


def test_failed_event_has_its_own_type_and_id() -> None:
    event = build_event(finished("Failed"), "Status")
    assert event["type"] == "io.mememaker.clipjob.failed" and event["id"] == "u1.failed"
    assert event["data"]["reason"] == "SourceNotFound" and "url" not in event["data"]


@pytest.mark.parametrize("policy", ["Secret", "None"])
def test_url_policy_keeps_the_url_out_of_the_event(policy: str) -> None:
    body = finished(urlSecretName="a-clip-url") if policy == "Secret" else finished()
    data = build_event(body, policy)["data"]
    assert "url" not in data
    assert ("urlSecretName" in data) == (policy == "Secret")


def test_the_body_is_identical_on_every_retry() -> None:
    assert encode_event(build_event(finished(), "Status")) == encode_event(
        build_event(finished(), "Status")
    )


# -- signing -------------------------------------------------------------------------------


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(b"key", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature(b"key", 1700000000, body) == "sha256=" + expected
    headers = signed_headers(b"key", 1700000000, body)
    assert headers["X-Clip-Timestamp"] == "1700000000"
    assert headers["X-Clip-Signature"] == "sha256=" + expected
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert "X-Clip-Signature" not in signed_headers(None, 1700000000, body)


def test_verify_refuses_tampering_wrong_keys_and_replays() -> None:
    body = encode_event(build_event(finished(), "Status"))
    sig = signature(b"key", 1000, body)
    assert verify(b"key", body, "1000", sig, now=1100)
    assert not verify(b"key", body + b" ", "1000", sig, now=1100)
    assert not verify(b"other", body, "1000", sig, now=1100)
    assert not verify(b"key", body, "1001", sig, now=1100)  # the timestamp is signed
    assert not verify(b"key", body, "1000", sig, now=1000 + 301)  # too old: a replay
    assert not verify(b"key", body, "soon", sig, now=1000)


# -- retries -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, verdict",
    [
        (200, "delivered"),
        (204, "delivered"),
        (500, "retry"),
        (503, "retry"),
        (429, "retry"),
        (408, "retry"),
        (400, "reject"),
        (404, "reject"),
        (410, "reject"),
        (302, "reject"),
    ],
)
def test_classify(code: int, verdict: str) -> None:
    assert classify(code) == verdict


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    assert [backoff_delay(n, 1.0) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert [backoff_delay(n, 0.0) for n in (1, 2, 3, 4)] == [0.5, 1, 2, 4]
    assert backoff_delay(30, 1.0) == 60 and backoff_delay(30, 0.0) == 30


def test_retry_after_seconds_or_date_capped() -> None:
    assert retry_after("5", 0) == 5
    assert retry_after("3600", 0) == 60
    assert retry_after("Thu, 01 Jan 1970 00:00:10 GMT", 0) == 10
    assert retry_after("soon", 0) is None and retry_after(None, 0) is None


# -- the decision --------------------------------------------------------------------------


def test_a_finished_clipjob_with_a_webhook_needs_it_delivered() -> None:
    assert decide(finished(), None, None, Facts(), NOW, S).need == Need.NOTIFY
    assert decide(finished("Failed"), None, None, Facts(), NOW, S).need == Need.NOTIFY


def test_no_webhook_no_notification_unless_the_operator_has_a_default() -> None:
    assert decide(finished(notify=None), None, None, Facts(), NOW, S).need is None
    default = Settings(default_bucket="clips", notify_url="http://sink.platform.svc/")
    assert decide(finished(notify=None), None, None, Facts(), NOW, default).need == Need.NOTIFY


def test_succeeded_waits_for_its_url() -> None:
    unsigned = finished(conditions=[{**READY, "status": "False"}])
    assert decide(unsigned, None, None, Facts(), NOW, S).need == Need.URL
    policy_none = Settings(default_bucket="clips", url_policy="None")
    unsigned["status"].pop("url")  # urlPolicy None: no URL to wait for
    assert decide(unsigned, None, None, Facts(), NOW, policy_none).need == Need.NOTIFY


def test_at_most_two_status_writes_per_delivery() -> None:
    cj = finished("Failed")
    retrying = Delivery("Failed", "Retrying", "HTTP 500; retrying", 1, "2026-11-30T12:00:00Z", 500)
    plan = decide(cj, None, None, Facts(notification=retrying), NOW, S)
    assert plan.status == {"notification": retrying.to_status()}
    assert plan.events[0][:2] == ("Warning", "NotificationRetrying")
    assert "token" not in plan.events[0][2]
    cj["status"].update(plan.status)
    # Later attempts while retrying (or after a restart): no write.
    again = Delivery("Failed", "Retrying", "HTTP 502; retrying", 2, "2026-11-30T12:00:02Z", 502)
    plan = decide(cj, None, None, Facts(notification=again), NOW, S)
    assert plan.status is None and plan.events == [] and plan.need is None
    assert decide(cj, None, None, Facts(), NOW, S).need == Need.NOTIFY  # still owed
    done = Delivery("Failed", "Delivered", "delivered", 3, "2026-11-30T12:00:05Z", 200, 5.0)
    plan = decide(cj, None, None, Facts(notification=done), NOW, S)
    assert plan.status == {
        "notification": {
            "phase": "Failed",
            "delivered": True,
            "reason": "Delivered",
            "attempts": 3,
            "lastAttemptAt": "2026-11-30T12:00:05Z",
            "responseCode": 200,
            "message": "delivered",
        }
    }
    assert plan.events[0][:2] == ("Normal", "NotificationDelivered")
    cj["status"].update(plan.status)
    assert decide(cj, None, None, Facts(), NOW, S).need is None  # never again


@pytest.mark.parametrize("reason", ["GaveUp", "Rejected", "AddressRefused", "SecretNotFound"])
def test_a_final_failure_is_recorded_once_and_not_retried(reason: str) -> None:
    cj = finished("Failed")
    out = Delivery("Failed", reason, f"{reason} details", 0)
    plan = decide(cj, None, None, Facts(notification=out), NOW, S)
    assert plan.status is not None and plan.status["notification"]["delivered"] is False
    assert plan.events == [("Warning", f"Notification{reason}", f"{reason} details")]
    cj["status"].update(plan.status)
    assert decide(cj, None, None, Facts(), NOW, S).need is None


def test_status_record_is_json_and_matches_the_crd_fields() -> None:
    import yaml

    crd = yaml.safe_load(Path("crds/clipjob.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fields = set(schema["properties"]["status"]["properties"]["notification"]["properties"])
    record = Delivery("Succeeded", "Delivered", "ok", 1, "2026-11-30T12:00:00Z", 200).to_status()
    assert set(record) == fields
    json.dumps(record)


def test_clipjobs_that_finished_long_before_are_not_announced_all_at_once() -> None:
    """A default webhook configured (or an operator upgraded) later: no flood of history."""
    old = finished(completionTime="2026-11-30T10:00:00Z")  # 2 h ago, window 600 s + 300 s
    default = Settings(default_bucket="clips", notify_url="http://sink.platform.svc/")
    assert decide(old, None, None, Facts(), NOW, S).need is None
    assert (
        decide(
            finished(notify=None, completionTime="2026-11-30T10:00:00Z"),
            None,
            None,
            Facts(),
            NOW,
            default,
        ).need
        is None
    )
    # A delivery that had started (an operator restarted mid-delivery) is still finished.
    old["status"]["notification"] = {"phase": "Succeeded", "reason": "Retrying", "attempts": 2}
    assert decide(old, None, None, Facts(), NOW, S).need == Need.NOTIFY
    longer = Settings(default_bucket="clips", notify_retry_seconds=86400)
    del old["status"]["notification"]
    assert decide(old, None, None, Facts(), NOW, longer).need == Need.NOTIFY


def test_a_later_record_clears_what_an_earlier_one_said() -> None:
    """status.notification is merge-patched: a field the new record lacks must be nulled."""
    retrying = Delivery("Failed", "Retrying", "HTTP 500", 1, "2026-11-30T12:00:00Z", 500)
    gave_up = Delivery("Failed", "GaveUp", "connection refused; gave up", 4, "2026-11-30T12:10:00Z")
    assert retrying.to_status()["responseCode"] == 500
    assert gave_up.to_status()["responseCode"] is None  # not the 500 of the first attempt


def test_time_to_live_waits_for_the_notification_but_not_forever() -> None:
    from clip_operator.plan import Act

    cj = finished("Failed")
    cj["spec"]["ttlSecondsAfterFinished"] = 10  # finished 30 s ago: past its end of life
    plan = decide(cj, None, None, Facts(), NOW, S)
    assert plan.need == Need.NOTIFY and Act.DELETE_CLIPJOB not in plan.actions
    cj["status"]["notification"] = {"phase": "Failed", "reason": "Delivered", "delivered": True}
    assert Act.DELETE_CLIPJOB in decide(cj, None, None, Facts(), NOW, S).actions
    # Never tried and long finished (an operator down for hours): deleted, nothing sent.
    old = finished("Failed", completionTime="2026-11-30T10:00:00Z")
    old["spec"]["ttlSecondsAfterFinished"] = 10
    assert Act.DELETE_CLIPJOB in decide(old, None, None, Facts(), NOW, S).actions
