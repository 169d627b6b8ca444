"""Fair admission: round-robin between namespaces, then priority, then age; caps."""

from __future__ import annotations

from clip_operator.admission import Admission, QueueEntry


def entry(ns: str, n: int, priority: int = 0) -> QueueEntry:
    return QueueEntry(
        f"2026-11-30T10:{n // 60:02d}:{n % 60:02d}Z", ns, f"c{n}", f"{ns}-{n}", priority
    )


def test_a_flooded_namespace_never_delays_another_by_more_than_one_slot() -> None:
    adm = Admission(limit=10)
    granted = [u for n in range(500) for u in adm.request(entry("flood", n))]
    assert len(granted) == 10 and adm.waiting() == 490
    adm.request(entry("quiet", 9999))  # arrives last, older ones wait in "flood"
    # The very next free slot goes to the quiet namespace.
    assert adm.running(granted[0], active=False) == ["quiet-9999"]
    # Then "flood" again, oldest first.
    assert adm.running(granted[1], active=False) == ["flood-10"]


def test_namespaces_take_turns() -> None:
    adm = Admission(limit=1)
    first = adm.request(entry("a", 0))
    for n in range(1, 4):
        adm.request(entry("a", n))
        adm.request(entry("b", n))
        adm.request(entry("c", n))
    order: list[str] = []
    holder = first[0]
    for _ in range(9):
        (holder,) = adm.running(holder, active=False)
        order.append(holder.split("-")[0])
    assert order[:6] in (["b", "c", "a", "b", "c", "a"], ["c", "b", "a", "c", "b", "a"])
    assert sorted(order) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3


def test_priority_orders_within_a_namespace_then_age() -> None:
    adm = Admission(limit=1)
    (holder,) = adm.request(entry("a", 0))
    adm.request(entry("a", 1))
    adm.request(entry("a", 2, priority=5))
    adm.request(entry("a", 3, priority=5))
    adm.request(entry("a", 4, priority=-1))
    seen = []
    for _ in range(4):
        (holder,) = adm.running(holder, active=False)
        seen.append(holder)
    assert seen == ["a-2", "a-3", "a-1", "a-4"]


def test_priority_never_beats_the_round_robin_between_namespaces() -> None:
    adm = Admission(limit=1)
    (holder,) = adm.request(entry("a", 0))
    for n in range(1, 5):
        adm.request(entry("a", n, priority=1000))
    adm.request(entry("b", 9, priority=-1000))
    (nxt,) = adm.running(holder, active=False)
    assert nxt == "b-9"


def test_per_namespace_caps_with_overrides() -> None:
    adm = Admission(limit=10, namespace_limit=2, namespace_limits={"big": 5})
    small = [u for n in range(6) for u in adm.request(entry("small", n))]
    big = [u for n in range(8) for u in adm.request(entry("big", n))]
    assert len(small) == 2 and len(big) == 5
    assert adm.holding_by_namespace() == {"small": 2, "big": 5}
    assert adm.waiting_by_namespace() == {"small": 4, "big": 3}
    # A capped namespace's slot frees: only that namespace's next one may take it.
    assert adm.running(small[0], active=False) == ["small-2"]
    # Global room is left (7 of 10 held) but both namespaces are at their caps.
    assert adm.pump() == []
    # A third namespace gets the free global slots at once.
    assert adm.request(entry("other", 1)) == ["other-1"]


def test_jobs_seen_running_count_against_their_namespace_cap() -> None:
    adm = Admission(limit=0, namespace_limit=1)
    adm.running("old", active=True, namespace="a")  # e.g. found at start-up
    assert adm.request(entry("a", 1)) == []
    assert adm.request(entry("b", 1)) == ["b-1"]
    assert adm.running("old", active=False) == ["a-1"]


def test_withdrawn_entries_do_not_take_a_turn_and_are_shed() -> None:
    adm = Admission(limit=1)
    (holder,) = adm.request(entry("a", 0))
    for n in range(1, 300):
        adm.request(entry("a", n))
    for n in range(1, 299):
        adm.withdraw(f"a-{n}")
    assert adm.queued_entries() < 100
    assert adm.running(holder, active=False) == ["a-299"]
    assert adm.waiting() == 0 and adm.waiting_by_namespace() == {}
