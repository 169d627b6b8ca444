"""The work queue, admission heap and cache: the core's data structures, on a fake clock."""

from __future__ import annotations

import asyncio
import random

from clip_operator.admission import Admission, QueueEntry
from clip_operator.cache import Cache
from clip_operator.workqueue import Backoff, Result, WorkQueue, serve


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_key_is_queued_once_and_never_served_twice_at_once() -> None:
    async def main() -> None:
        q = WorkQueue(clock=Clock())
        q.add("a")
        q.add("a")
        q.add("b")
        assert q.depth() == 2
        key = await q.get()
        q.add(key)  # changed while being processed: served again, after
        assert q.depth() == 1  # only b is ready
        other = await q.get()
        assert other == "b"
        q.done(key)
        assert await q.get() == "a"

    asyncio.run(main())


def test_add_after_keeps_the_earliest_due_time_and_fires_on_the_clock() -> None:
    clock = Clock()
    q = WorkQueue(clock=clock)
    q.add_after("a", 10)
    q.add_after("a", 5)
    q.add_after("a", 20)
    clock.t += 4.9
    assert q._promote_due() is not None and q.depth() == 0
    clock.t += 0.2
    q._promote_due()
    assert q.depth() == 1 and q.delayed() == 0


def test_backoff_grows_exponentially_with_jitter_up_to_a_cap_and_resets() -> None:
    b = Backoff(base=1, cap=60, rng=random.Random(7))
    delays = [b.when("k") for _ in range(10)]
    for n, d in enumerate(delays):
        assert min(60, 2**n) * 0.5 <= d <= min(60, 2**n)
    assert delays[-1] <= 60 and b.count("k") == 10
    b.forget("k")
    assert b.when("k") <= 1
    # Two keys failing together do not retry in lock-step.
    assert Backoff(rng=random.Random(1)).when("x") != Backoff(rng=random.Random(2)).when("x")


def test_errors_back_off_per_key_and_other_keys_are_not_held_up() -> None:
    async def main() -> list[str]:
        q = WorkQueue()
        served: list[str] = []

        async def reconcile(key: str) -> Result:
            served.append(key)
            if key == "bad":
                raise RuntimeError("API refused")
            return Result()

        workers = [asyncio.create_task(serve(q, reconcile)) for _ in range(2)]
        for key in ("bad", "good1", "good2"):
            q.add(key)
        await asyncio.sleep(0.05)
        for w in workers:
            w.cancel()
        assert q.delayed() == 1 and q.backoff.count("bad") == 1
        return served

    served = asyncio.run(main())
    assert served.count("bad") == 1 and {"good1", "good2"} <= set(served)


def test_rate_limited_results_keep_backing_off() -> None:
    async def main() -> int:
        q = WorkQueue()

        async def reconcile(key: str) -> Result:
            return Result(rate_limited=True)

        worker = asyncio.create_task(serve(q, reconcile))
        q.add("k")
        await asyncio.sleep(0.02)
        worker.cancel()
        return q.backoff.count("k")

    assert asyncio.run(main()) == 1


def test_stalled_for_reports_work_waiting_without_progress() -> None:
    clock = Clock()
    q = WorkQueue(clock=clock)
    assert q.stalled_for() == 0
    clock.t += 3600  # idle for an hour: not stalled
    q.add("a")
    assert q.stalled_for() == 0
    clock.t += 400
    assert q.stalled_for() == 400


# -- admission ------------------------------------------------------------------------------


def entry(n: int, ns: str = "a") -> QueueEntry:
    return QueueEntry(f"2026-11-30T10:{n:02d}:00Z", ns, f"c{n}", f"u{n}")


def test_admission_is_oldest_first_within_the_limit() -> None:
    adm = Admission(limit=2)
    assert adm.request(entry(3)) == ["u3"]
    assert adm.request(entry(1)) == ["u1"]
    assert adm.request(entry(2)) == [] and adm.waiting() == 1
    assert adm.running("u1", active=False) == ["u2"]


def test_a_withdrawn_clipjob_hands_its_slot_on_and_does_not_hold_the_head() -> None:
    adm = Admission(limit=1)
    adm.request(entry(1, "a"))  # oldest, will be refused
    adm.request(entry(2, "b"))
    assert adm.admitted("u1") and not adm.admitted("u2")
    assert adm.withdraw("u1") == ["u2"]  # refused: the next tenant gets the slot
    assert adm.request(entry(1, "a")) == []  # back in line, behind the running one
    assert adm.running("u2", active=False) == ["u1"]


def test_jobs_found_running_count_even_over_the_limit() -> None:
    adm = Admission(limit=1)
    adm.running("x", active=True)
    adm.running("y", active=True)
    assert adm.in_flight() == 2 and adm.request(entry(1)) == []
    adm.running("x", active=False)
    assert adm.in_flight() == 1 and not adm.admitted("u1")
    assert adm.running("y", active=False) == ["u1"]


def test_admission_of_many_waiting_touches_only_what_it_admits() -> None:
    adm = Admission(limit=10)
    for n in range(10):
        adm.running(f"r{n}", active=True)
    for n in range(5000):
        adm.request(QueueEntry(f"t{n:05d}", "ns", f"c{n}", f"w{n}"))
    assert adm.waiting() == 5000
    assert adm.running("r0", active=False) == ["w0"]
    for n in range(1, 200):
        adm.withdraw(f"w{n}")
    assert adm.running("r1", active=False) == ["w200"]
    assert adm.queued_entries() < 5000  # withdrawn entries were shed


# -- cache resync -----------------------------------------------------------------------------


def obj(uid: str, rv: int) -> dict[str, object]:
    return {"metadata": {"uid": uid, "name": uid, "namespace": "ns", "resourceVersion": str(rv)}}


def job_of(owner: str) -> dict[str, object]:
    ref = {"kind": "ClipJob", "controller": True, "uid": owner}
    return {"metadata": {"uid": "j" + owner, "name": "j", "ownerReferences": [ref]}, "status": {}}


def test_resync_drops_what_vanished_in_a_relist_gap() -> None:
    clock = Clock()
    cache = Cache(clock=clock)
    cache.put_clipjob(obj("a", 1))
    cache.put_clipjob(obj("b", 2))
    cache.put_job("a", job_of("a"))
    clock.t += 1
    gone, lost = cache.resync(clock(), [obj("a", 3)], [])
    assert gone == {"b"} and lost == {"a"}
    assert set(cache.clipjobs) == {"a"} and cache.jobs == {}
    assert cache.clipjobs["a"]["metadata"]["resourceVersion"] == "3"


def test_resync_keeps_what_a_watch_event_brought_after_the_list_began() -> None:
    clock = Clock()
    cache = Cache(clock=clock)
    listed_at = clock()
    clock.t += 1
    cache.put_clipjob(obj("new", 9))  # created after the LIST was taken
    cache.put_job("new", job_of("new"))
    gone, lost = cache.resync(listed_at, [], [])
    assert gone == set() and lost == set() and "new" in cache.clipjobs


def test_stale_watch_events_do_not_overwrite_newer_state() -> None:
    cache = Cache()
    cache.put_clipjob(obj("a", 10))
    assert not cache.put_clipjob(obj("a", 9))
    assert cache.clipjobs["a"]["metadata"]["resourceVersion"] == "10"


def test_a_key_granted_a_slot_jumps_ahead_of_a_burst() -> None:
    async def main() -> list[str]:
        q = WorkQueue(clock=Clock())
        for n in range(100):
            q.add(f"burst{n}")
        q.add("burst50", urgent=True)  # already queued: moved to the front
        q.add("granted", urgent=True)
        return [await q.get(), await q.get(), await q.get()]

    assert asyncio.run(main()) == ["granted", "burst50", "burst0"]


def test_a_new_leader_serves_unfinished_clipjobs_before_rechecking_finished_ones() -> None:
    async def main() -> list[str]:
        q = WorkQueue(clock=Clock())
        for n in range(5):
            q.add(f"done{n}")
        q.add("new0")
        q.add("done5")
        q.add("new1")
        q.prioritise(lambda key: key.startswith("new"))
        return [await q.get() for _ in range(4)]

    assert asyncio.run(main()) == ["new0", "new1", "done0", "done1"]
