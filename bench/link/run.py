"""Time to link (issue 18): ClipJob created -> `Ready` with a working URL, on the local node.

    hack/cluster up --with-node          # a control plane and one real node (hack/node)
    python -m bench.link.run --runs 20 --tag after

A 10 s clip (60-70 s, accurate mode, the default) of a 1280x720 25 fps H.264 + AAC source,
one ClipJob at a time, measured by bench/link/timed.py through the e2e tier's fixtures
(the real operator as a process, the real job image, versitygw and the media server on the
node's host address). The cluster is the one `hack/cluster env` names (CLUSTER_DIR and the
ports in the environment win). Prints the table and records it in bench/RESULTS.md, the
runs themselves in bench/link/results.json (by tag).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.clip.run import write_section
from bench.operator.run import pct

REPO = Path(__file__).resolve().parents[2]
TITLE = "## time to link: create -> Ready with a working URL (issue 18)"
STEPS = (
    ("operator: ClipJob -> Job", None, "job"),
    ("Job controller: Job -> Pod", "job", "pod"),
    ("scheduler: Pod -> bound", "pod", "scheduled"),
    ("kubelet: bound -> container running", "scheduled", "started"),
    ("worker: running -> exited", "started", "exited"),
    ("operator: exit -> Ready with URL", "exited", "ready"),
    ("total: create -> Ready with URL", None, "ready"),
)
PHASES = ("resolve", "download", "encode", "upload", "total")


def measure(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "link.json"
        env = {**os.environ, "BENCH_LINK_RUNS": str(runs), "BENCH_LINK_OUT": str(out)}
        plugins = ["tests.plugins.cluster", "tests.plugins.s3", "tests.plugins.media",
                   "tests.e2e.conftest"]  # fmt: skip
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-x", "-s", "-q"]
        for plugin in plugins:
            cmd += ["-p", plugin]
        cmd += [str(REPO / "bench" / "link" / "timed.py")]
        subprocess.run(cmd, cwd=REPO, env=env, check=True)
        return dict(json.loads(out.read_text()))


def row(label: str, values: list[float]) -> str:
    return f"| {label} | {pct(values, 50):.2f} | {pct(values, 95):.2f} | {max(values):.2f} |"


def table(runs: list[dict[str, Any]]) -> list[str]:
    """Each step's and each worker phase's p50, p95 and max over the runs."""
    rows = ["| step | p50 s | p95 s | max s |", "| --- | ---: | ---: | ---: |"]
    for label, begin, end in STEPS:
        rows.append(row(label, [r["marks"][end] - r["marks"].get(begin, 0.0) for r in runs]))
    for phase in PHASES:
        values = [float(r["timings"].get(f"{phase}Seconds", 0.0)) for r in runs]
        rows.append(row(f"worker's own {phase}", values))
    return rows


def verdict(totals: list[float]) -> str:
    p50, p95 = pct(totals, 50), pct(totals, 95)
    return (
        f"p50 {p50:.2f} s (target <= 5: {'met' if p50 <= 5 else 'NOT met'}), "
        f"p95 {p95:.2f} s (target <= 8: {'met' if p95 <= 8 else 'NOT met'})"
    )


def render(result: dict[str, Any], command: str, tag: str) -> str:
    runs = result["runs"]
    totals = [r["marks"]["ready"] for r in runs]
    load = os.getloadavg()
    return "\n".join([
        f"### {tag} ({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, {len(runs)} runs, "
        f"load average {load[0]:.1f})",
        "",
        f"Command: `{command}`. {verdict(totals)}.",
        "",
        *table(runs),
        "",
        "Each run's total, s: " + ", ".join(f"{t:.2f}" for t in totals),
        "",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--tag", default="run")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "link" / "results.json",
                        help="the raw marks of every run are kept here, by tag")  # fmt: skip
    args = parser.parse_args(argv)
    result = measure(args.runs)
    kept = json.loads(args.json.read_text()) if args.json.exists() else {}
    args.json.write_text(json.dumps({**kept, args.tag: result}, indent=1))
    command = "python -m bench.link.run" + (f" {shlex.join(argv or sys.argv[1:])}")
    block = render(result, command, args.tag)
    print(block)
    text = args.results.read_text() if args.results.exists() else "# Benchmark results\n"
    section = text[text.index(TITLE) :] if TITLE in text else f"{TITLE}\n\n"
    end = section.find("\n## ", len(TITLE))
    section = section[: end + 1] if end >= 0 else section
    write_section(args.results, section.rstrip("\n") + "\n\n" + block, TITLE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
