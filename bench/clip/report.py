"""The "## clip" section of bench/RESULTS.md from a bench.clip.run measurement."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

BEFORE = Path(__file__).with_name("before.md")
NOTES = Path(__file__).with_name("notes.md")  # the reading of the numbers, by hand
FORCE = "yt-dlp --download-sections --force-keyframes-at-cuts"
DEFAULT = "yt-dlp --download-sections"
COPY = "ffmpeg stream copy"
# (ours, theirs, target ratio, what) compared round by round
TARGETS = [
    ("clip-worker accurate", FORCE, 0.5, "accurate / yt-dlp --force-keyframes-at-cuts"),
    ("clip-worker accurate", COPY, 1.5, "accurate / ffmpeg -ss -to -i URL -c copy"),
    ("clip-worker fast", DEFAULT, 0.5, "fast / yt-dlp --download-sections"),
]
BYTES_TARGET = 1.2
PHASES = ("resolve", "download", "encode", "upload", "total")


def _ffmpeg_version() -> str:
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=30)
    return out.stdout.split()[2]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _paired(results: dict[str, Any], ours: str, theirs: str) -> tuple[list[float], float]:
    if ours not in results or theirs not in results:
        return [], float("nan")
    ratios = [a / b for a, b in zip(results[ours].walls, results[theirs].walls, strict=True)]
    return ratios, _median(ratios)


def _frame(offset: int, fps: float) -> str:
    return "exact" if offset == 0 else f"{offset:+d} frames ({offset / fps:+.2f} s)"


def _phases(o: Any) -> str:
    timings = [r.get("timings", {}) for r in o.results]
    parts = []
    for phase in PHASES:
        values = [t[f"{phase}Seconds"] for t in timings if f"{phase}Seconds" in t]
        if values:
            parts.append(f"{phase} {_median(values):.2f}")
    paths = sorted({r.get("cutPath", "") for r in o.results})
    names = sorted({name for r in o.results for name in r.get("_steps", {})})
    steps = [
        f"{name} {_median([r.get('_steps', {}).get(name, 0.0) for r in o.results]):.2f}"
        for name in names
    ]
    return (", ".join(parts) + f" (cutPath {'/'.join(paths)}); FFmpeg/ffprobe steps: "
            + ", ".join(steps))  # fmt: skip


def _case(case: Any, results: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(lines of the case's block, rows of the verdict table)."""
    fps = case.spec.frame_rate
    index, media = case.minimum
    need = index + media
    lines = [
        f"#### {case.key}: {case.title}",
        "",
        f"Clip {case.start:g}-{case.end:g} s. Minimum bytes ({case.minimum_note}): "
        f"{index / 1e3:.0f} kB + {media / 1e6:.2f} MB = {need / 1e6:.2f} MB.",
        "",
        "| method | wall s | CPU s | bytes fetched | / minimum | output MB | duration s | frames "
        "| first frame shown | first frame stored |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for o in results.values():
        fetched = _median(o.bytes)
        lines.append(
            f"| {o.name} | {_median(o.walls):.2f} | {_median(o.cpus):.2f} | "
            f"{fetched / 1e6:.2f} MB | {fetched / need:.2f} | {o.size / 1e6:.2f} | "
            f"{o.duration:.3f} | {o.frames} | {_frame(o.shown[0], fps)}, {o.shown[1]:.1f} dB | "
            f"{_frame(o.stored, fps)} |"
        )
    lines.append("")
    verdicts = []
    for ours, theirs, target, what in TARGETS:
        for suffix in ("", " (before)"):
            ratios, median = _paired(results, ours + suffix, theirs)
            if not ratios:
                continue
            listed = ", ".join(f"{r:.2f}" for r in ratios)
            met = "met" if median <= target else "NOT met"
            label = what + (" — worker before" if suffix else "")
            lines.append(f"- {label}, per round: {listed} (median **{median:.2f}**, "
                         f"target <= {target}: {met})")  # fmt: skip
            if not suffix:
                before = _paired(results, ours + " (before)", theirs)[1]
                was = f"{before:.2f}" if before == before else "-"
                verdicts.append(f"| {case.key} | {what} <= {target} | {was} | {median:.2f} | "
                                f"{met} |")  # fmt: skip
    for mode in ("accurate", "fast"):
        ratios, median = _paired(results, f"clip-worker {mode}", f"clip-worker {mode} (before)")
        if ratios:
            listed = ", ".join(f"{r:.2f}" for r in ratios)
            lines.append(f"- {mode}: this worker / the worker before, per round: {listed} "
                         f"(median {median:.2f})")  # fmt: skip
    for mode in ("fast", "accurate"):
        name = f"clip-worker {mode}"
        if name in results:
            share = _median(results[name].bytes) / need
            met = "met" if share <= BYTES_TARGET else "NOT met"
            lines.append(f"- {mode}: bytes fetched / minimum {share:.2f} (target <= "
                         f"{BYTES_TARGET}: {met})")  # fmt: skip
            verdicts.append(
                f"| {case.key} | {mode} bytes / minimum <= {BYTES_TARGET} | "
                f"{_bytes_before(results, name, need)} | {share:.2f} | {met} |"
            )
    for o in results.values():
        if o.results:
            lines.append(f"- {o.name} worker phases (median of the rounds, s): {_phases(o)}")
    lines.append("")
    return lines, verdicts


def _bytes_before(results: dict[str, Any], name: str, need: int) -> str:
    old = results.get(name + " (before)")
    return f"{_median(old.bytes) / need:.2f}" if old else "-"


def render(data: dict[str, Any], command: str) -> str:
    """The whole "## clip" section: after (this run), then the recorded before."""
    load = data["load"]
    rounds = data["rounds"]
    per_round = ", ".join(f"{one[0]:.1f}" for one in load)
    blocks: list[str] = []
    verdicts: list[str] = []
    for case in data["cases"]:
        lines, rows = _case(case, data["results"][case.key])
        blocks += lines
        verdicts += rows
    before = f' and the worker at `{data["before"]}` ("(before)" rows)' if data["before"] else ""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return "\n".join([
        "## clip",
        "",
        "Issue 18: a 10 s clip made by clip-worker and by the alternatives, same source and "
        "range, in paired rounds of one run. Targets: accurate (smart cut) <= 0.5x yt-dlp "
        "`--download-sections --force-keyframes-at-cuts` and <= 1.5x a plain stream copy "
        "(`ffmpeg -ss S -to E -i URL -c copy`); fast <= 0.5x yt-dlp's default section "
        "download; bytes fetched <= 1.2x the minimum.",
        "",
        f"### after ({stamp})",
        "",
        f"Command: `{command}` — {rounds} paired rounds, every method on every source in each "
        "round, the order rotated from round to round; this worker" + before + ". "
        f"{platform.machine()}, {os.cpu_count()} CPUs shared with other agents' builds and "
        f"tests; FFmpeg {_ffmpeg_version()}. Load average (1 min) at the start and after each "
        f"round: {per_round}. Wall and CPU s (the method and all its children) are medians "
        "of the rounds; the comparable figure is the median of the per-round paired ratios.",
        "",
        "The worker runs as the operator runs it: presigned PUT URLs for the clip and its "
        "result (no S3 credentials, no boto3), the local versitygw behind them, made before "
        "its timing starts (the operator makes them). Its wall time includes Python "
        "start-up, resolving the source, the output check (a smart cut decoded whole; a copy "
        "or a whole encode: every packet parsed, keyframes decoded) and the upload.",
        "",
        "| source | target | worker before | this worker | verdict |",
        "| --- | --- | ---: | ---: | --- |",
        *verdicts,
        "",
        *blocks,
        "\"first frame shown\" is what FFmpeg decodes first (edit lists honoured), matched by "
        "PSNR against the source frames from a GOP before the start to one after; \"stored\" "
        "ignores edit lists (`-ignore_editlist 1`): the lead-in a player that ignores edit "
        "lists shows. The clip methods share one server whose 32 KiB send buffer keeps byte "
        "counts exact; the full download uses a second one with default buffers.",
        "",
        NOTES.read_text().rstrip("\n") if NOTES.exists() else "",
        "",
        BEFORE.read_text().rstrip("\n"),
        "",
    ])  # fmt: skip
