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


def test_a_burst_beyond_the_pending_bound_is_dropped_not_held() -> None:
    """Events wait in memory only up to MAX_PENDING (a 5,000-ClipJob burst must not hold
    thousands of Event bodies and their tasks); a clean stop waits DRAIN_SECONDS at most."""

    class SlowKube(FakeKube):
        async def create_event(self, namespace: str, event: dict[str, Any]) -> None:
            await asyncio.sleep(3600)  # an API server that never answers

    async def main() -> tuple[int, int, float]:
        poster = EventPoster(SlowKube())
        for n in range(events.MAX_PENDING + 50):
            body = {**BODY, "metadata": {**BODY["metadata"], "uid": f"u{n}"}}
            poster.info(body, "JobCreated", "created")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await poster.drain(timeout=0.2)
        waited = loop.time() - started
        pending = len(poster._tasks)
        for task in list(poster._tasks):
            task.cancel()
        return pending, poster.dropped, waited

    pending, dropped, waited = asyncio.run(main())
    assert pending == events.MAX_PENDING and dropped == 50
    assert waited < 5
