"""Events like client-go's recorder: events.k8s.io/v1, deduplicated into series, rate-limited."""

from __future__ import annotations

import asyncio
from typing import Any

from clip_operator import events
from clip_operator.events import EventPoster

BODY = {"metadata": {"name": "a", "namespace": "ns", "uid": "u1", "resourceVersion": "5"}}


class FakeKube:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.patched: list[tuple[str, dict[str, Any]]] = []

    async def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        self.created.append(event)

    async def patch_event(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.patched.append((name, patch))


def post_many(kube: FakeKube, calls: list[tuple[str, str]]) -> None:
    async def main() -> None:
        poster = EventPoster(kube)
        for reason, message in calls:
            poster.warn(BODY, reason, message)
        await poster.drain()

    asyncio.run(main())


def test_a_repeated_event_becomes_a_series_not_new_objects() -> None:
    kube = FakeKube()
    post_many(kube, [("JobCreateRefused", "quota")] * 4)
    (event,) = kube.created
    assert event["apiVersion"] == "events.k8s.io/v1" and event["type"] == "Warning"
    assert event["regarding"]["uid"] == "u1" and event["reportingController"]
    assert event["reportingInstance"] and event["eventTime"].endswith("Z")
    assert [p["series"]["count"] for _, p in kube.patched] == [2, 3, 4]
    assert {name for name, _ in kube.patched} == {event["metadata"]["name"]}


def test_different_messages_are_different_events() -> None:
    kube = FakeKube()
    post_many(kube, [("DeleteFailed", "timeout"), ("DeleteFailed", "refused")])
    assert len(kube.created) == 2 and kube.patched == []


def test_a_flood_for_one_object_is_cut_at_the_burst() -> None:
    kube = FakeKube()
    post_many(kube, [("Retry", f"attempt {n}") for n in range(100)])
    assert len(kube.created) == events.BURST
