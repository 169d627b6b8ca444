"""Benchmark: a 10 s clip made by clip-worker and by the alternatives, on three sources.

    CLIP_S3_PORT=7171 CLIP_S3_STATE=/tmp/clip-s3 hack/s3.sh start
    eval "$(CLIP_S3_PORT=7171 CLIP_S3_STATE=/tmp/clip-s3 hack/s3.sh env)"
    python -m bench.clip.run --rounds 5 --before <commit>

Sources (bench/clip/source.py), each served by `tests/mediaserver.py` on 127.0.0.1, which
counts the bytes it sends: the 60-minute 720p 25 fps MP4 (index first), a 29.97 fps MP4
with a 10 s GOP, B-frames and its index at the end, and HLS (the main source's first 10
minutes remuxed, 4 s segments). Methods (bench/clip/methods.py): clip-worker fast and
accurate (and, with --before, the worker of an older commit), `yt-dlp --download-sections`
with and without `--force-keyframes-at-cuts`, a plain `ffmpeg -ss -to -i URL -c copy`, and
a full download followed by an exact cut.

Rounds are paired and interleaved: each round runs every method on every source, in an
order rotated from round to round, so a method's ratio to another in the same round is
little moved by the load of other work on the machine; the report gives each round's
ratios and their median, the load average, wall and CPU seconds (the method and its
children), bytes fetched, the output's frames and which source frame it starts with.
Rewrites the "## clip" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.clip.methods import BUCKET, Method, methods, run_checked, s3_client, worker_tree
from bench.clip.report import render
from bench.clip.source import (
    NTSC_MOOV_END,
    BenchSource,
    ensure_source,
    hls_minimum,
    hls_of,
    mp4_minimum,
)
from tests.mediaserver import MediaHTTPServer
from tests.plugins.media import decoded_frames, media_duration

REPO = Path(__file__).resolve().parents[2]
_s3_client = s3_client  # the name bench.clip.longgop imports
__all__ = ["BUCKET", "_s3_client", "main", "write_section"]


@dataclass
class Case:
    """One source: where it is served from, the clip's range, the bytes it cannot avoid."""

    key: str
    title: str
    spec: BenchSource
    directory: Path
    path: str  # under directory: what the URL names
    reference: Path  # the MP4 whose frames the outputs are matched against
    start: float
    end: float
    minimum: tuple[int, int]  # (index or playlists, media bytes)
    minimum_note: str


@dataclass
class Outcome:
    """One method's measurements on one source over the rounds."""

    name: str
    command: str
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)  # worker termination JSON
    duration: float = 0.0
    frames: int = 0
    size: int = 0
    shown: tuple[int, float] = (0, 0.0)  # (offset in frames, PSNR dB) of the first frame shown
    stored: int = 0  # offset of the first frame stored (edit lists ignored)


def children_cpu() -> float:
    """User + system CPU seconds of finished child processes (and the children they waited
    for): unlike wall time, it hardly moves when other work shares the cores."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def identify(source: Path, fps: float, image: Path, target: int, back: int) -> tuple[int, float]:
    """(offset from target, PSNR dB) of the source frame in [target-back, target+1] that best
    matches `image`: one FFmpeg run, the psnr filter's per-frame log."""
    with tempfile.TemporaryDirectory(prefix="psnr-") as tmp:
        stats = Path(tmp) / "psnr.log"
        run_checked(["ffmpeg", "-nostdin", "-v", "error", "-ss", f"{(target - back) / fps:.6f}",
                     "-t", f"{(back + 2) / fps:.6f}", "-i", str(source), "-loop", "1", "-i",
                     str(image), "-lavfi", f"[0:v][1:v]psnr=stats_file={stats}:shortest=1",
                     "-f", "null", "-"])  # fmt: skip
        scores = {}
        for line in stats.read_text().splitlines():
            fields = dict(item.split(":", 1) for item in line.split() if ":" in item)
            value = fields["psnr_avg"]
            scores[int(fields["n"]) - 1] = float("inf") if value == "inf" else float(value)
    best = max(scores, key=lambda i: scores[i])
    return best - back, scores[best]


def _first_frame(clip: Path, out: Path, ignore_editlist: bool) -> Path:
    pre = ["-ignore_editlist", "1"] if ignore_editlist else []
    run_checked(["ffmpeg", "-nostdin", "-v", "error", "-y", *pre, "-i", str(clip),
                 "-frames:v", "1", str(out)])  # fmt: skip
    return out


def cases(length: float, which: list[str]) -> list[Case]:
    """The sources asked for (generated and cached on first use)."""
    main = BenchSource()
    out = []
    if "mp4" in which:
        d = ensure_source(main)
        s, e = 2700.6, 2700.6 + length
        out.append(Case("mp4", main.describe(), main, d, "source.mp4", d / "source.mp4", s, e,
                        mp4_minimum(d / "source.mp4", s, e),
                        "index + keyframe-before-start to end"))  # fmt: skip
    if "ntsc" in which:
        d = ensure_source(NTSC_MOOV_END)
        s, e = 150.5, 150.5 + length  # between keyframes (150.15 s, 160.16 s)
        out.append(Case("ntsc", NTSC_MOOV_END.describe(), NTSC_MOOV_END, d, "source.mp4",
                        d / "source.mp4", s, e, mp4_minimum(d / "source.mp4", s, e),
                        "index (at the end) + keyframe-before-start to end"))  # fmt: skip
    if "hls" in which:
        d = hls_of(main, 600)
        s, e = 300.6, 300.6 + length
        out.append(Case("hls", "HLS (VOD, 4 s MPEG-TS segments) remuxed from the first 10 "
                        "minutes of the 60-minute source", main, d, "index.m3u8",
                        ensure_source(main) / "source.mp4", s, e, hls_minimum(d, s, e),
                        "playlist + the segments overlapping [start, end)"))  # fmt: skip
    return out


def _quality(case: Case, o: Outcome, out: Path, work: Path) -> None:
    fps = case.spec.frame_rate
    o.duration = media_duration(out)
    o.frames = decoded_frames(out)
    o.size = out.stat().st_size
    back = round(fps * case.spec.gop_seconds)
    target = math.ceil(case.start * fps - 1e-6)  # the first frame shown at or after start
    o.shown = identify(case.reference, fps, _first_frame(out, work / "shown.png", False),
                       target, back)  # fmt: skip
    o.stored = identify(case.reference, fps, _first_frame(out, work / "stored.png", True),
                        target, back)[0]  # fmt: skip


def measure(args: argparse.Namespace) -> dict[str, Any]:
    chosen = cases(args.length, args.sources)
    s3 = s3_client()
    try:
        s3.create_bucket(Bucket=BUCKET)
    except Exception as exc:  # already there
        if "BucketAlready" not in type(exc).__name__ and "BucketAlready" not in str(exc):
            raise
    before = worker_tree(args.before) if args.before else None
    load = [os.getloadavg()]
    servers: dict[str, tuple[MediaHTTPServer, MediaHTTPServer]] = {}
    plans: dict[str, list[Method]] = {}
    results: dict[str, dict[str, Outcome]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-clip-") as tmp:
        work = Path(tmp)
        for case in chosen:
            server = MediaHTTPServer(case.directory, "127.0.0.1", 0)
            # The full download gets default socket buffers: the small one that keeps
            # byte counts exact caps one loopback connection at a few MB/s.
            bulk = MediaHTTPServer(case.directory, "127.0.0.1", 0, send_buffer=None)
            server.start()
            bulk.start()
            servers[case.key] = (server, bulk)
            plan = methods(f"{server.url}/{case.path}", f"{bulk.url}/{case.path}", case.start,
                           case.end, work, before)  # fmt: skip
            plan = [m for m in plan if not args.methods or any(w in m.name for w in args.methods)]
            plans[case.key] = plan
            results[case.key] = {m.name: Outcome(m.name, m.command) for m in plan}
        try:
            for round_no in range(args.rounds):
                for case in chosen:
                    server, bulk = servers[case.key]
                    plan = plans[case.key]
                    shift = round_no % len(plan)
                    for method in plan[shift:] + plan[:shift]:
                        o = results[case.key][method.name]
                        if method.prepare is not None:
                            method.prepare()
                        server.stats.reset()
                        bulk.stats.reset()
                        began, cpu = time.monotonic(), children_cpu()
                        out = method.produce()
                        o.walls.append(time.monotonic() - began)
                        o.cpus.append(children_cpu() - cpu)
                        o.bytes.append(server.stats.bytes() + bulk.stats.bytes())
                        if method.collect is not None:
                            o.results.append(method.collect())
                        print(f"round {round_no + 1} {case.key} {method.name}: "
                              f"{o.walls[-1]:.2f} s, {o.cpus[-1]:.2f} CPU s, {o.bytes[-1]} B",
                              flush=True)  # fmt: skip
                        if round_no == 0:
                            _quality(case, o, out, work)
                        out.unlink(missing_ok=True)
                load.append(os.getloadavg())
        finally:
            for server, bulk in servers.values():
                for srv in (server, bulk):
                    srv.shutdown()
                    srv.server_close()
            if before is not None:
                shutil.rmtree(before.parent, ignore_errors=True)
    return {"cases": chosen, "results": results, "load": load, "rounds": args.rounds,
            "before": args.before}  # fmt: skip


def write_section(path: Path, section: str, title: str = "## clip") -> None:
    """Replace (or append) the section headed `title`, leaving every other section alone."""
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    lines = text.splitlines(keepends=True)
    begin = next((i for i, ln in enumerate(lines) if ln.strip() == title), None)
    if begin is None:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(begin + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))  # fmt: skip
        tail = "".join(lines[end:])
        text = "".join(lines[:begin]) + section + ("\n" + tail if tail else "")
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--length", type=float, default=10.0, help="clip length, seconds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sources", nargs="+", default=["mp4", "ntsc", "hls"],
                        choices=["mp4", "ntsc", "hls"])  # fmt: skip
    parser.add_argument("--methods", nargs="*", default=[],
                        help="only methods whose name contains one of these")  # fmt: skip
    parser.add_argument("--before", default="", help="also run the worker of this commit")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if "CLIP_S3_ENDPOINT" not in os.environ:
        parser.error('needs an S3 server: hack/s3.sh start && eval "$(hack/s3.sh env)"')
    data = measure(args)
    command = "python -m bench.clip.run" + (f" {shlex.join(argv)}" if argv else "")
    section = render(data, command)
    print(section)
    if not args.no_write:
        write_section(args.results, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
