"""The traffic behind the dashboards' pictures (bench/traffic/plan.py) has the promised shape.

30 minutes: bursts, a steady rate, about 5 % failing sources, a few long clips, bounded in
count and rate; the failing phase pushes the 5-minute error ratio over the Error Rate
panel's 5 % line and the rest of the run stays under it.
"""

from __future__ import annotations

from bench.traffic.plan import FLAKY, MISSING, NAMESPACES, plan, summary, work_seconds


def test_the_30_minute_mix() -> None:
    arrivals = plan()
    counts = summary(arrivals)
    assert 500 <= counts["total"] <= 1500, "bounded: a shared 2-core machine"
    assert 0.04 <= counts[MISSING] / counts["total"] <= 0.06, "about 5 % failing sources"
    assert counts["long"] >= 4 and counts[FLAKY] >= 5
    assert max(a.at for a in arrivals) < 1800
    phases = {a.phase for a in arrivals}
    assert {"steady", "burst", "spike", "failing", "quiet", "long"} <= phases
    assert {a.namespace for a in arrivals} == set(NAMESPACES)
    long_work = [work_seconds(a.clip_seconds) for a in arrivals if a.phase == "long"]
    assert min(long_work) >= 240, "long clips take minutes"
    assert max(long_work) < 600, "and finish within the operator's default deadline"


def test_rates_stay_modest() -> None:
    """At most 3 ClipJobs/s (one spike of 60 at once aside) over any 10 s."""
    arrivals = [a for a in plan() if a.phase not in ("spike", "long")]
    times = sorted(a.at for a in arrivals)
    j = 0
    for i, t in enumerate(times):
        while times[j] < t - 10:
            j += 1
        assert i - j + 1 <= 31, f"{i - j + 1} ClipJobs in 10 s at {t:.0f}s"
    assert sum(a.phase == "spike" for a in plan()) == 60


def test_error_ratio_crosses_5_percent_only_in_the_failing_phase() -> None:
    arrivals = plan()
    failing = [a.at for a in arrivals if a.phase == "failing"]
    start, end = min(failing), max(failing)
    for t0 in range(0, 1800 - 300 + 1, 30):  # 5-minute windows, as the panel's rate([5m])
        window = [a for a in arrivals if t0 <= a.at < t0 + 300 and a.phase != "long"]
        if not window:
            continue
        ratio = sum(a.outcome == MISSING for a in window) / len(window)
        if start <= t0 and t0 + 300 <= end:
            assert ratio >= 0.15, f"failing phase window at {t0}s: {ratio:.1%}"
        elif t0 + 300 <= start or t0 > end:
            assert ratio < 0.05, f"window at {t0}s: {ratio:.1%}"


def test_a_shorter_run_keeps_the_shape() -> None:
    short = summary(plan(total=180))
    assert 0 < short["total"] < 200 and short[MISSING] > 0 and short["long"] == 6
    assert summary(plan(max_clipjobs=50))["total"] == 50
