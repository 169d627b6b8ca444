"""The traffic schedule of bench/traffic: which ClipJob is created when, and how it ends.

A plan is a list of `Arrival`s, fixed by its parameters alone (no randomness), so two runs
of the same plan create the same ClipJobs in the same order and the same ones fail:

- phases of a steady rate, bursts (a high rate for a short time, a spike of N at once),
  a failing phase (one tenant's sources go missing: 20 % of its ClipJobs fail) and a quiet
  tail; about 5 % of all ClipJobs fail over the whole run;
- a few long clips (minutes of work), spread over the run;
- a few flaky sources: the first attempt fails with a network error (exit 1), the Job's
  retry succeeds, as a worker's would after a dropped connection.

The outcome is encoded in the source URL's path (`/ok/`, `/missing/`, `/flaky/`), so the
Pod-completing node reads it from the Pod the operator built, as a worker would fetch it.
"""

from __future__ import annotations

from dataclasses import dataclass

OK, MISSING, FLAKY = "ok", "missing", "flaky"


@dataclass(frozen=True)
class Phase:
    name: str
    start: float  # seconds from the run's start
    seconds: float
    rate: float  # ClipJobs per second (0: a spike of `spike` at `start`)
    fail_every: int  # every n-th ClipJob of the phase has a missing source (0: none)
    spike: int = 0


@dataclass(frozen=True)
class Arrival:
    at: float  # seconds from the run's start
    name: str
    namespace: str
    outcome: str
    clip_seconds: float  # spec.end - spec.start
    phase: str


def phases(total: float) -> list[Phase]:
    """The 30-minute mix, scaled to `total` seconds (shorter runs keep the shape)."""
    s = total / 1800.0
    layout = [
        # name, start, seconds, rate, fail_every, spike
        ("steady", 0, 240, 0.25, 50, 0),
        ("burst", 240, 90, 3.0, 50, 0),
        ("steady", 330, 270, 0.3, 50, 0),
        ("spike", 600, 60, 0.0, 50, 60),
        ("steady", 660, 240, 0.3, 50, 0),
        ("failing", 900, 360, 0.4, 5, 0),
        ("steady", 1260, 240, 0.3, 50, 0),
        ("burst", 1500, 60, 2.0, 50, 0),
        ("quiet", 1560, 240, 0.04, 0, 0),
    ]
    return [
        Phase(name, start * s, secs * s, rate, fail, max(1, round(spike * s)) if spike else 0)
        for name, start, secs, rate, fail, spike in layout
    ]


LONG_AT = (120, 420, 700, 1000, 1300, 1450)  # long clips (x total/1800)
FLAKY_EVERY = 40  # every 40th ClipJob overall (that does not fail anyway) is flaky
NAMESPACES = ("traffic-tenant-a", "traffic-tenant-b")


def plan(total: float = 1800.0, max_clipjobs: int = 2000) -> list[Arrival]:
    """All arrivals, sorted by time; at most `max_clipjobs`."""
    out: list[Arrival] = []
    s = total / 1800.0
    for ph in phases(total):
        if ph.spike:
            times = [ph.start] * ph.spike
        else:
            n = int(ph.rate * ph.seconds)
            times = [ph.start + i / ph.rate for i in range(n)]
        for i, at in enumerate(times):
            k = len(out)
            # The failing phase's missing sources all come from tenant b.
            ns = NAMESPACES[k % 2] if ph.name != "failing" else NAMESPACES[1 if i % 5 == 0 else 0]
            missing = ph.fail_every and i % ph.fail_every == ph.fail_every - 1
            if ph.name == "failing":
                missing = i % ph.fail_every == 0
            outcome = MISSING if missing else (FLAKY if k % FLAKY_EVERY == 7 else OK)
            clip = 10.0 + (k * 7) % 31  # 10..40 s clips
            out.append(Arrival(at, f"t{k:05d}", ns, outcome, clip, ph.name))
    for j, at in enumerate(LONG_AT):
        # Minutes of work (about 4 to 7.5): long clips of a long source.
        out.append(Arrival(at * s, f"long{j}", NAMESPACES[j % 2], OK, 240.0 + 40 * j, "long"))
    out.sort(key=lambda a: (a.at, a.name))
    return out[:max_clipjobs]


def work_seconds(clip_seconds: float) -> float:
    """How long the simulated worker takes for a clip: 8 s start-up plus 1 s per clip second
    (download and encode), so 10..40 s clips run 18..48 s and the long clips minutes."""
    return 8.0 + clip_seconds


def summary(arrivals: list[Arrival]) -> dict[str, int]:
    counts = {"total": len(arrivals), OK: 0, MISSING: 0, FLAKY: 0, "long": 0}
    for a in arrivals:
        counts[a.outcome] += 1
        counts["long"] += a.phase == "long"
    return counts
