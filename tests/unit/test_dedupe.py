"""Dedupe: what counts as the same clip, and a twin served without a second Job."""

from __future__ import annotations

import asyncio
from typing import Any

from clip_operator.dedupe import content_digest, content_key
from clip_operator.models import parse_spec
from tests.unit.test_controller import SPEC, clipjob, drain, make, settle, status_of


def digest(spec: dict[str, Any], ns: str = "ns", scope: str = "Namespace") -> str:
    return content_digest(parse_spec(spec), ns, scope, "clips", "http://s3")


def test_the_same_clip_asked_differently_has_one_digest() -> None:
    base = digest(SPEC)
    assert digest({**SPEC, "start": "0:00", "end": "00:10.000"}) == base
    assert digest({**SPEC, "output": {"format": "mp4", "mode": "accurate"}}) == base
    # Fields that do not shape the bytes do not matter.
    assert digest({**SPEC, "retries": 5, "priority": 7, "ttlSecondsAfterFinished": 60}) == base
    assert digest({**SPEC, "deletionPolicy": "Delete", "urlExpiresSeconds": 600}) == base


def test_anything_that_shapes_the_clip_or_its_place_makes_another_digest() -> None:
    base = digest(SPEC)
    assert digest({**SPEC, "end": "11"}) != base
    assert digest({**SPEC, "output": {"format": "webm"}}) != base
    assert digest({**SPEC, "output": {"maxHeight": 360}}) != base
    assert digest({**SPEC, "output": {"mode": "fast"}}) != base
    assert digest({**SPEC, "source": {"url": "http://e.test/other.mp4"}}) != base
    assert content_digest(parse_spec(SPEC), "ns", "Namespace", "other", "http://s3") != base


def test_namespaces_are_apart_unless_the_scope_is_cluster() -> None:
    assert digest(SPEC, "a") != digest(SPEC, "b")
    assert digest(SPEC, "a", "Cluster") == digest(SPEC, "b", "Cluster")
    spec = parse_spec(SPEC)
    assert content_key(spec, "a", "Namespace", "d" * 64) == f"a/by-content/{'d' * 64}.mp4"
    assert content_key(spec, "a", "Cluster", "d" * 64) == f"by-content/{'d' * 64}.mp4"


def test_an_identical_twin_waits_then_succeeds_from_the_first_clip_without_a_job() -> None:
    from clip_operator import metrics

    def count(result: str) -> float:
        return float(metrics.DEDUPE.labels(result)._value.get())

    counts = {r: count(r) for r in ("hit", "miss", "twin")}

    async def main() -> None:
        ctl, kube, presigner = make(limit=5, dedupe="Namespace")
        ctl.clipjob_event("ADDED", clipjob("first", "ns", 0))
        await drain(ctl)
        ctl.clipjob_event("ADDED", clipjob("twin", "ns", 1))
        await drain(ctl)
        assert len(kube.created) == 1  # the twin made no Job of its own
        waiting = status_of(kube, "twin")
        assert (waiting["phase"], waiting["reason"]) == ("Queued", "WaitingForTwin")
        assert "first" in waiting["message"]
        assert status_of(kube, "first")["cache"] == "Miss"
        # The first one succeeds: its clip (and result object) are in S3 now.
        key = status_of(kube, "first")["jobName"]
        presigner.result = {"key": "ns/by-content/x.mp4", "sizeBytes": 42, "durationSeconds": 10}
        first = ctl.cache.clipjobs["uid-first"]
        ctl.clipjob_event(
            "MODIFIED",
            {
                **first,
                "metadata": {**first["metadata"], "resourceVersion": "999"},
                "status": {**first["status"], "phase": "Succeeded", "jobName": key},
            },
        )
        await drain(ctl)
        await settle()
        await drain(ctl)
        hit = status_of(kube, "twin")
        assert (hit["phase"], hit["cache"]) == ("Succeeded", "Hit")
        assert hit["url"] and "jobName" not in hit
        assert len(kube.created) == 1

    asyncio.run(main())
    assert {r: count(r) - counts[r] for r in counts} == {"hit": 1, "miss": 1, "twin": 1}


def test_deleting_a_clip_another_clipjob_uses_keeps_the_object() -> None:
    from datetime import UTC, datetime

    from clip_operator.decide import decide
    from clip_operator.plan import FINALIZER, Act, Facts, Need, Settings

    body = clipjob("a", "ns", 0, phase="Succeeded", output={"bucket": "b", "key": "k"})
    body["spec"] = {**SPEC, "deletionPolicy": "Delete"}
    body["metadata"].update(finalizers=[FINALIZER], deletionTimestamp="2026-11-30T10:05:00Z")
    now = datetime(2026, 11, 30, 10, 6, tzinfo=UTC)
    on = Settings(default_bucket="b", dedupe="Namespace")
    assert decide(body, None, None, Facts(), now, on).need == Need.OBJECT_USERS
    kept = decide(body, None, None, Facts(object_users=["ns/b"]), now, on)
    assert Act.REMOVE_FINALIZER in kept.actions and kept.need is None
    assert [e[1] for e in kept.events] == ["ObjectKept"] and "ns/b" in kept.events[0][2]
    alone = decide(body, None, None, Facts(object_users=[]), now, on)
    assert alone.need == Need.DELETE_OBJECTS
    # Without dedupe every ClipJob has its own object: no question asked.
    off = Settings(default_bucket="b")
    assert decide(body, None, None, Facts(), now, off).need == Need.DELETE_OBJECTS
