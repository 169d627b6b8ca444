"""The controller's wiring with a fake API: the issue-11 symptoms, reproduced in-process.

The real-cluster versions of these scenarios are in tests/faults/; these run in
milliseconds and pin the mechanics (slots, resync, recovery, background S3).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from kubernetes.client.exceptions import ApiException

from clip_operator import runtime
from clip_operator.builders import UploadTarget
from clip_operator.config import load_config
from clip_operator.controller import Controller
from clip_operator.presign import StorageProblem

SPEC = {"source": {"url": "http://e.test/v.mp4"}, "start": "0", "end": "10"}


def refused(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="Forbidden")
    exc.body = json.dumps({"message": message})
    return exc


class FakeKube:
    def __init__(self) -> None:
        self.created: list[str] = []
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.refuse_ns: set[str] = set()
        self.gone: set[str] = set()  # ClipJob names whose writes 404
        self.jobs: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.history: set[str] = set()  # Jobs that ever existed (their Events)

    async def create_job(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
        if namespace in self.refuse_ns:
            raise refused(403, 'jobs "x" is forbidden: exceeded quota: no-jobs')
        self.created.append(f"{namespace}/{manifest['metadata']['name']}")
        self.history.add(manifest["metadata"]["name"])
        job = {**manifest, "status": {}}
        job["metadata"] = {**manifest["metadata"], "uid": "job-" + manifest["metadata"]["name"]}
        self.jobs[manifest["metadata"]["name"]] = job
        return job

    async def read_job(self, namespace: str, name: str) -> dict[str, Any]:
        if name not in self.jobs:
            raise ApiException(status=404, reason="Not Found")
        return self.jobs[name]

    async def job_has_events(self, namespace: str, name: str) -> bool:
        return name in self.history

    async def delete_job(self, namespace: str, name: str, propagation: str = "Foreground") -> None:
        self.jobs.pop(name, None)

    async def list_job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        return []

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> str | None:
        if name in self.gone:
            return None
        self.patches.append((name, status))
        return str(100 + len(self.patches))

    async def update_finalizers(self, *args: Any, **kwargs: Any) -> str:
        return "7"

    async def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        self.events.append(event)

    def list_jobs_sync(self, *args: Any) -> list[dict[str, Any]]:
        return []

    def list_clipjobs_sync(self, *args: Any) -> list[dict[str, Any]]:
        return []


class FakePresigner:
    def __init__(self) -> None:
        self.missing_secret = False
        self.result: dict[str, Any] = {}
        self.block = asyncio.Event()

    async def presign_upload(self, *args: Any) -> UploadTarget:
        if self.missing_secret:
            raise StorageProblem("SecretNotFound", "the Secret 'tenant-s3' ... does not exist")
        return UploadTarget("https://s3/put?sig", {"Content-Type": "video/mp4"}, "https://s3/r")

    async def presign_get(self, *args: Any) -> tuple[str, str, str]:
        return "https://s3/get?sig", "2026-12-01T00:00:00Z", "2026-11-30T00:00:00Z"

    async def read_result(self, *args: Any) -> dict[str, Any]:
        return self.result

    async def delete(self, *args: Any) -> None:
        await self.block.wait()  # a black-holed endpoint


def clipjob(name: str, ns: str, minute: int, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mememaker.io/v1alpha1",
        "kind": "ClipJob",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": f"2026-11-30T10:{minute:02d}:00Z",
        },
        "spec": SPEC,
        "status": status,
    }


def make(limit: int = 1, **settings: str) -> tuple[Controller, FakeKube, FakePresigner]:
    kube, presigner = FakeKube(), FakePresigner()
    env = {"CLIP_OPERATOR_IN_FLIGHT_LIMIT": str(limit), "CLIP_OPERATOR_S3_BUCKET": "b"}
    env.update({f"CLIP_OPERATOR_{k.upper()}": v for k, v in settings.items()})
    config = load_config(env)
    return Controller(kube, config, presigner), kube, presigner  # type: ignore[arg-type]


async def drain(ctl: Controller, rounds: int = 20) -> None:
    for _ in range(rounds):
        if not ctl.queue.depth():
            await settle()  # background S3 calls (the dedupe lookup) enqueue when done
            if not ctl.queue.depth():
                break
        key = await ctl.queue.get()
        try:
            result = await ctl.reconcile(key)  # as workqueue.serve does, minus the timers
            if result.rate_limited:
                ctl.queue.add_rate_limited(key)
        finally:
            ctl.queue.done(key)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def status_of(kube: FakeKube, name: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for who, patch in kube.patches:
        if who == name:
            merged.update(patch)
    return merged


def test_symptom1_a_refused_tenant_does_not_stop_the_others() -> None:
    async def main() -> None:
        ctl, kube, _ = make(limit=1)
        kube.refuse_ns.add("team-a")
        ctl.clipjob_event("ADDED", clipjob("old", "team-a", 0))
        ctl.clipjob_event("ADDED", clipjob("new", "team-b", 5))
        await drain(ctl)
        assert kube.created == ["team-b/new-clip-" + kube.created[0].split("-clip-")[1]]
        a = status_of(kube, "old")
        assert (a["phase"], a["reason"]) == ("Queued", "JobCreateRefused")
        assert "exceeded quota" in a["message"]
        await settle()
        assert any(e["reason"] == "JobCreateRefused" for e in kube.events)
        assert ctl.queue.delayed() >= 1  # the refused one backs off instead of spinning

    asyncio.run(main())


def test_symptom2_a_clipjob_deleted_in_a_relist_gap_gets_no_job() -> None:
    async def main() -> None:
        ctl, kube, _ = make(limit=0)
        ctl.clipjob_event("ADDED", clipjob("ghost", "ns", 0))
        kube.gone.add("ghost")  # deleted meanwhile; the watch never says so
        await drain(ctl)
        # The first write 404s: the key is forgotten, not retried into more Jobs.
        created = len(kube.created)
        assert "uid-ghost" not in ctl.cache.clipjobs and created <= 1
        for _ in range(5):
            ctl.queue.add("uid-ghost")
            await drain(ctl)
        assert len(kube.created) == created
        # And a resync LIST without it drops it from a fresh cache too.
        ctl.clipjob_event("ADDED", clipjob("ghost2", "ns", 1))
        await runtime.resync(ctl)
        assert "uid-ghost2" not in ctl.cache.clipjobs

    asyncio.run(main())


def test_symptom2_a_job_deleted_in_the_gap_frees_its_slot_on_resync() -> None:
    async def main() -> None:
        ctl, kube, _ = make(limit=1)
        ctl.clipjob_event("ADDED", clipjob("first", "ns", 0))
        await drain(ctl)
        second = clipjob("second", "ns", 1)
        second["spec"] = {**SPEC, "end": "20"}  # not an identical twin (that would wait)
        ctl.clipjob_event("ADDED", second)
        await drain(ctl)
        assert len(kube.created) == 1 and ctl.admission.waiting() == 1
        kube.jobs.clear()  # the Job vanished while no DELETED event came
        await runtime.resync(ctl)  # LIST says: no Jobs, no ClipJobs -> both forgotten
        assert ctl.admission.in_flight() == 0

    asyncio.run(main())


def test_symptom3_a_vanished_job_is_recovered_from_s3_not_run_twice() -> None:
    async def main() -> None:
        ctl, kube, presigner = make(limit=0)
        presigner.result = {"key": "ns/a.mp4", "sizeBytes": 42, "durationSeconds": 10.0}
        ctl.clipjob_event("ADDED", clipjob("a", "ns", 0, phase="Running", jobName="a-clip-x"))
        await drain(ctl)
        await settle()  # the background S3 read finishes and re-enqueues
        await drain(ctl)
        st = status_of(kube, "a")
        assert st["phase"] == "Succeeded" and st["output"]["sizeBytes"] == 42
        assert kube.created == []

    asyncio.run(main())


def test_symptom3_no_result_in_s3_fails_job_lost() -> None:
    async def main() -> None:
        ctl, kube, _ = make(limit=0)
        ctl.clipjob_event("ADDED", clipjob("a", "ns", 0, phase="Running", jobName="a-clip-x"))
        await drain(ctl)
        await settle()
        await drain(ctl)
        st = status_of(kube, "a")
        assert (st["phase"], st["reason"]) == ("Failed", "JobLost") and kube.created == []

    asyncio.run(main())


def test_symptom4_slow_s3_deletions_never_hold_a_worker() -> None:
    async def main() -> None:
        ctl, kube, _ = make(limit=1)
        for n in range(5):
            body = clipjob(f"d{n}", "ns", n)
            body["spec"] = {**SPEC, "deletionPolicy": "Delete"}
            body["metadata"]["finalizers"] = ["mememaker.io/delete-s3-object"]
            body["metadata"]["deletionTimestamp"] = "2026-11-30T11:00:00Z"
            ctl.clipjob_event("MODIFIED", body)
        ctl.clipjob_event("ADDED", clipjob("fresh", "ns", 30))
        await asyncio.wait_for(drain(ctl), timeout=2)  # deletions hang; the queue does not
        assert ctl.s3ops.running() == 5
        assert any(name.startswith("fresh") for name in (c.split("/")[1] for c in kube.created))

    asyncio.run(main())


def test_symptom6_missing_secret_fails_at_once() -> None:
    async def main() -> None:
        ctl, kube, presigner = make(limit=1)
        presigner.missing_secret = True
        ctl.clipjob_event("ADDED", clipjob("s", "ns", 0))
        await drain(ctl)
        st = status_of(kube, "s")
        assert (st["phase"], st["reason"]) == ("Failed", "SecretNotFound")
        assert kube.created == [] and ctl.admission.in_flight() == 0

    asyncio.run(main())


def test_writes_per_clipjob_stay_few_with_the_limit_on() -> None:
    async def main() -> None:
        ctl, kube, _ = make(limit=1)
        for n in range(20):
            ctl.clipjob_event("ADDED", clipjob(f"c{n}", "ns", n))
        await drain(ctl, rounds=200)
        # 19 wait: one write each, however the queue moves.
        for n in range(1, 20):
            ctl.queue.add(f"uid-c{n}")
        await drain(ctl, rounds=200)
        per = [sum(1 for who, _ in kube.patches if who == f"c{n}") for n in range(20)]
        assert max(per) <= 2, per

    asyncio.run(main())


def test_liveness_fails_when_the_work_queue_stops_making_progress() -> None:
    import socket
    import urllib.error
    import urllib.request

    from clip_operator.workqueue import WorkQueue

    def get(port: int) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    async def main() -> None:
        ctl, _, _ = make()
        now = [1000.0]
        ctl.queue = WorkQueue(clock=lambda: now[0])
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        runner = await runtime.serve_health(ctl, port)
        try:
            assert await asyncio.to_thread(get, port) == 200
            ctl.queue.add("k")  # work arrives, and no worker ever takes it
            now[0] += ctl.config.stall_seconds + 1
            assert await asyncio.to_thread(get, port) == 503
            key = await ctl.queue.get()
            ctl.queue.done(key)
            assert await asyncio.to_thread(get, port) == 200
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_the_job_name_is_recorded_before_the_create_and_a_kill_between_is_safe() -> None:
    async def main() -> None:
        ctl, kube, _ = make(limit=0)
        ctl.clipjob_event("ADDED", clipjob("k", "ns", 0))
        await drain(ctl)
        (first_name, first_patch) = kube.patches[0]
        assert first_name == "k" and first_patch["jobName"] and kube.created
        job = first_patch["jobName"]
        # Restart with the name recorded and the Job gone after it existed: no second Job.
        ctl2, kube2, _ = make(limit=0)
        kube2.history.add(job)
        ctl2.clipjob_event("ADDED", clipjob("k", "ns", 0, jobName=job, reason="Starting"))
        await drain(ctl2)
        await settle()
        await drain(ctl2)
        assert kube2.created == [] and status_of(kube2, "k")["reason"] == "JobLost"
        # Restart with the name recorded but the create never made: create it, once.
        ctl3, kube3, _ = make(limit=0)
        ctl3.clipjob_event("ADDED", clipjob("k", "ns", 0, jobName=job, reason="Starting"))
        await drain(ctl3)
        assert kube3.created == [f"ns/{job}"]

    asyncio.run(main())


def test_every_accepted_clipjob_is_counted_queued_once_even_straight_into_a_slot() -> None:
    from clip_operator import metrics

    def queued() -> float:
        return float(metrics.JOBS_QUEUED_TOTAL._value.get())

    async def main() -> None:
        ctl, kube, _ = make(limit=1)
        ctl.clipjob_event("ADDED", clipjob("fast", "ns", 0))  # a free slot: no wait
        await drain(ctl)
        second = clipjob("slow", "ns", 1)
        second["spec"] = {**SPEC, "end": "20"}
        ctl.clipjob_event("ADDED", second)  # waits for the slot first
        await drain(ctl)
        for _ in range(3):  # more reconciles count nothing more
            ctl.queue.add("uid-fast")
            ctl.queue.add("uid-slow")
            await drain(ctl)
        assert len(kube.created) == 1

    before = queued()
    asyncio.run(main())
    assert queued() - before == 2


def test_a_late_create_answer_never_replaces_a_newer_job_from_the_watch() -> None:
    """The Job controller's first sync (e.g. Suspended) can be watched before the create
    call returns; the older create answer must not hide it (nothing else would come)."""
    from clip_operator.cache import Cache

    cache = Cache()
    meta = {"name": "j", "namespace": "ns", "uid": "j1"}
    newer = {"metadata": {**meta, "resourceVersion": "12"}, "status": {"conditions": [1]}}
    older = {"metadata": {**meta, "resourceVersion": "11"}, "status": {}}
    cache.put_job("owner", newer)
    cache.put_job("owner", older)
    assert cache.jobs["owner"]["status"] == {"conditions": [1]}
    other = {"metadata": {**meta, "uid": "j2", "resourceVersion": "5"}, "status": {}}
    cache.put_job("owner", other)  # another Job of the owner replaces it whatever its version
    assert cache.jobs["owner"]["metadata"]["uid"] == "j2"
