"""Markdown tables from bench/operator/results.json (pasted into bench/RESULTS.md).

python -m bench.operator.report [results.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def fmt(block: dict[str, float]) -> str:
    return f"{block['p50']:.2f} / {block['p95']:.2f} / {block['p99']:.2f} / {block['max']:.2f}"


def table(tag: str, runs: list[dict[str, Any]]) -> str:
    lines = [
        f"### {tag}",
        "",
        "| run | created in s | drained in s | ClipJob -> Job p50/p95/p99/max s "
        "| Job complete -> Succeeded p50/p95/p99/max s "
        "| Job controller Job -> Pod p50/p95/p99/max s "
        "| ours / Job controller (p50, p99) | writes to each ClipJob (max) "
        "| Events per ClipJob: ours, Job controller "
        "| operator CPU s (ms per ClipJob after start-up) "
        "| operator RSS MB: peak, after, fresh with N present |",
        "| --- | ---: | ---: | --- | --- | --- | ---: | ---: | --- | ---: | --- |",
    ]
    for r in runs:
        ev = r.get("events_per_clipjob") or {}
        # Named by reportingController since events.k8s.io/v1 (was the component).
        ours_ev = ev.get("mememaker.io/clip-operator", ev.get("clip-operator", 0))
        op = r["operator"]
        ours, theirs = r["clipjob_to_job"], r["job_controller_job_to_pod"]
        ratio = ", ".join(f"{ours[p] / max(1e-9, theirs[p]):.2f}" for p in ("p50", "p99"))
        rss = f"{op.get('peak_rss_mb', 0):.0f}, {op.get('rss_mb', 0):.0f}"
        cpu = f"{op['cpu_seconds']}"
        if "start_cpu_seconds" in op:
            per = (op["cpu_seconds"] - op["start_cpu_seconds"]) / max(1, r["n"]) * 1000
            cpu += f" ({per:.1f})"
        if "fresh_rss_mb" in op:
            rss += f", {op['fresh_rss_mb']:.0f}"
        lines.append(
            f"| {r['label']} (N={r['n']}) | {r['create_seconds']} | {r['drain_seconds']} "
            f"| {fmt(r['clipjob_to_job'])} | {fmt(r['job_complete_to_succeeded'])} "
            f"| {fmt(r['job_controller_job_to_pod'])} | {ratio} "
            f"| {r['writes_per_clipjob']['mean']:.2f} ({r['writes_per_clipjob']['max']:.0f}) "
            f"| {ours_ev:.2f}, {ev.get('job-controller', 0):.2f} "
            f"| {cpu} | {rss} |"
        )
    lines.append("")
    lines.append(
        "API requests per ClipJob lifecycle (apiserver_request_total delta; the bench's own "
        "traffic and the Job controller's Pod and Job-status traffic left out; POST events "
        "counts every component's Events, ours are in the table above):"
    )
    lines.append("")
    for r in runs:
        reqs = ", ".join(
            f"{k} {v:g}"
            for k, v in r["operator_requests_per_clipjob"].items()
            if v >= 0.05 and k != "PATCH pods"  # PATCH pods: the Job controller
        )
        lines.append(f"- {r['label']}: {reqs}")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/operator/results.json")
    data = json.loads(src.read_text())
    for tag, block in data.items():
        print(table(f"{tag} ({block['when']})", block["runs"]))


if __name__ == "__main__":
    main()
