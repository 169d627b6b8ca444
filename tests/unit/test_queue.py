from clip_operator.queue import QueueEntry, admit, free_slots, position


def entry(created: str, name: str, ns: str = "a") -> QueueEntry:
    return QueueEntry(created, ns, name, f"uid-{ns}-{name}")


WAITING = [
    entry("2026-01-01T00:00:03Z", "c"),
    entry("2026-01-01T00:00:01Z", "a"),
    entry("2026-01-01T00:00:02Z", "b"),
    entry("2026-01-01T00:00:01Z", "a", ns="b"),
]


def test_admits_oldest_first_up_to_free_slots() -> None:
    started = admit(WAITING, in_flight=1, limit=3)
    assert [(e.namespace, e.name) for e in started] == [("a", "a"), ("b", "a")]


def test_no_slots_no_admission() -> None:
    assert admit(WAITING, in_flight=5, limit=3) == []


def test_zero_limit_means_unlimited() -> None:
    assert len(admit(WAITING, in_flight=100, limit=0)) == 4
    assert free_slots(0, 100) is None


def test_position_is_one_based_in_creation_order() -> None:
    assert position(WAITING, "uid-a-a") == 1
    assert position(WAITING, "uid-a-c") == 4
    assert position(WAITING, "missing") is None
