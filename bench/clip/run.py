"""Benchmark: a 10 s clip from the middle of a 60-minute 720p video served over HTTP.

    hack/s3.sh start && eval "$(hack/s3.sh env)" && python -m bench.clip.run

Compares, in one run and against the same local server (tests/mediaserver.py, which
counts the bytes it sends): clip-worker fast and accurate, `yt-dlp --download-sections`
with and without `--force-keyframes-at-cuts`, and a full download followed by an exact
FFmpeg cut. Reports wall time (median of the rounds), bytes fetched, output duration and
frame count, and which source frame each output starts with, then rewrites the
"## clip" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.clip.source import BenchSource, ensure_source
from tests.mediaserver import MediaHTTPServer
from tests.plugins.media import decoded_frames, ffprobe_json, media_duration

REPO = Path(__file__).resolve().parents[2]
BUCKET = "bench-clip"


@dataclass
class Outcome:
    """One method's measurements over the rounds."""

    name: str
    command: str
    walls: list[float] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)
    duration: float = 0.0
    frames: int = 0
    shown: tuple[int, float] = (0, 0.0)  # (offset in frames, PSNR dB) of the first frame shown
    stored: int = 0  # offset of the first frame stored (edit lists ignored)
    cut_path: str = ""
    phases: str = ""


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 1800) -> None:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed: {done.stderr[-1500:]}")


def identify(source: Path, fps: int, image: Path, target: int, back: int) -> tuple[int, float]:
    """(offset from target, PSNR dB) of the source frame in [target-back, target+1] that best
    matches `image`: one FFmpeg run, the psnr filter's per-frame log."""
    with tempfile.TemporaryDirectory(prefix="psnr-") as tmp:
        stats = Path(tmp) / "psnr.log"
        _run(["ffmpeg", "-nostdin", "-v", "error", "-ss", f"{(target - back) / fps:.6f}",
              "-t", f"{(back + 2) / fps:.6f}", "-i", str(source), "-loop", "1", "-i", str(image),
              "-lavfi", f"[0:v][1:v]psnr=stats_file={stats}:shortest=1",
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
    _run(["ffmpeg", "-nostdin", "-v", "error", "-y", *pre, "-i", str(clip), "-frames:v", "1",
          str(out)])  # fmt: skip
    return out


def _s3_client() -> object:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=os.environ["CLIP_S3_ENDPOINT"],
        region_name=os.environ.get("CLIP_S3_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"),
    )  # fmt: skip


def methods(
    url: str, bulk_url: str, start: float, end: float, work: Path
) -> list[tuple[str, str, Callable[[], Path]]]:
    """(name, command shown in the report, function producing the clip file)."""
    s3: Any = _s3_client()
    ytdlp = [sys.executable, "-m", "yt_dlp", "--no-cache-dir", "--no-part", "--quiet",
             "--no-progress", "--force-overwrites"]  # fmt: skip
    section = f"*{start}-{end}"

    def worker(mode: str) -> Callable[[], Path]:
        def go() -> Path:
            env = {**os.environ, "CLIP_SOURCE_URL": url, "CLIP_START": f"{start}",
                   "CLIP_END": f"{end}", "CLIP_OUTPUT_FORMAT": "mp4", "CLIP_MODE": mode,
                   "CLIP_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8", "CLIP_S3_BUCKET": BUCKET,
                   "CLIP_ALLOW_PORTS": str(urlsplit(url).port or 80),
                   "CLIP_S3_KEY": f"{mode}.mp4", "CLIP_WORK_DIR": str(work / "scratch"),
                   "CLIP_TERMINATION_LOG": str(work / f"{mode}.json")}  # fmt: skip
            _run(["clip-worker"], env=env)
            out = work / f"ours-{mode}.mp4"
            out.write_bytes(s3.get_object(Bucket=BUCKET, Key=f"{mode}.mp4")["Body"].read())
            return out

        return go

    def sections(force: bool) -> Callable[[], Path]:
        def go() -> Path:
            out = work / f"ytdlp-{int(force)}.mp4"
            extra = ["--force-keyframes-at-cuts"] if force else []
            _run([*ytdlp, "--download-sections", section, *extra, "-o", str(out), url])
            return out

        return go

    def full() -> Path:
        whole, out = work / "full.mp4", work / "full-cut.mp4"
        _run([*ytdlp, "-o", str(whole), bulk_url])
        _run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{start}", "-i", str(whole),
              "-t", f"{end - start}", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
              "-c:a", "aac", "-movflags", "+faststart", str(out)])  # fmt: skip
        whole.unlink()
        return out

    return [
        ("clip-worker fast", f"clip-worker (CLIP_MODE=fast, {url})", worker("fast")),
        ("clip-worker accurate", f"clip-worker (CLIP_MODE=accurate, {url})", worker("accurate")),
        ("yt-dlp --download-sections", f"yt-dlp --download-sections '{section}' URL",
         sections(False)),
        ("yt-dlp --download-sections --force-keyframes-at-cuts",
         f"yt-dlp --download-sections '{section}' --force-keyframes-at-cuts URL", sections(True)),
        ("full download, then exact cut",
         "yt-dlp URL && ffmpeg -ss S -i full.mp4 -t 10 -c:v libx264 -preset veryfast ...", full),
    ]  # fmt: skip


def clip_range_bytes(source: Path, start: float, end: float) -> tuple[int, int]:
    """(index size, bytes from the keyframe before start to end): the unavoidable fetch."""
    import struct

    with open(source, "rb") as handle:
        offset, moov = 0, 0
        for _ in range(100):
            handle.seek(offset)
            header = handle.read(16)
            if len(header) < 8:
                break
            size, kind = struct.unpack(">I4s", header[:8])
            size = struct.unpack(">Q", header[8:16])[0] if size == 1 else size
            if kind == b"moov":
                moov = size
            offset += size
    packets = ffprobe_json(
        source, "-read_intervals", f"{start - 10}%{end + 2}",
        "-show_entries", "packet=stream_index,pts_time,pos,size,flags",
    )["packets"]  # fmt: skip
    keys = [float(p["pts_time"]) for p in packets if p["stream_index"] == 0 and "K" in p["flags"]]
    keyframe = max(k for k in keys if k <= start)
    inside = [p for p in packets if keyframe <= float(p["pts_time"]) < end]
    low = min(int(p["pos"]) for p in inside)
    high = max(int(p["pos"]) + int(p["size"]) for p in inside)
    return moov, high - low


def measure(args: argparse.Namespace) -> tuple[list[Outcome], dict[str, Any]]:
    spec = BenchSource(seconds=int(args.minutes * 60))
    directory = ensure_source(spec)
    source = directory / "source.mp4"
    start, end = args.start, args.start + args.length
    index, clip = clip_range_bytes(source, start, end)
    server = MediaHTTPServer(directory, "127.0.0.1", 0)
    server.start()
    # The full download gets a server with default socket buffers: the small buffer that
    # keeps byte counts exact caps a single connection at a few MB/s on loopback.
    bulk = MediaHTTPServer(directory, "127.0.0.1", 0, send_buffer=None)
    bulk.start()
    s3: Any = _s3_client()
    try:
        s3.create_bucket(Bucket=BUCKET)
    except Exception as exc:  # already there
        if "BucketAlready" not in type(exc).__name__ and "BucketAlready" not in str(exc):
            raise
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="bench-clip-") as tmp:
        work = Path(tmp)
        target = round(start * spec.fps)
        url = f"{server.url}/source.mp4"
        chosen = methods(url, f"{bulk.url}/source.mp4", start, end, work)
        results = {name: Outcome(name, command) for name, command, _ in chosen}
        for round_no in range(args.rounds):
            for name, _, produce in chosen:
                server.stats.reset()
                bulk.stats.reset()
                began = time.monotonic()
                out = produce()
                results[name].walls.append(time.monotonic() - began)
                results[name].bytes.append(server.stats.bytes() + bulk.stats.bytes())
                print(f"round {round_no + 1} {name}: {results[name].walls[-1]:.2f} s, "
                      f"{results[name].bytes[-1]} B", flush=True)  # fmt: skip
                if round_no == 0:
                    o = results[name]
                    o.duration = media_duration(out)
                    o.frames = decoded_frames(out)
                    back = spec.fps * spec.gop_seconds
                    shown = _first_frame(out, work / "shown.png", False)
                    stored = _first_frame(out, work / "stored.png", True)
                    o.shown = identify(source, spec.fps, shown, target, back)
                    o.stored = identify(source, spec.fps, stored, target, back)[0]
                    mode = name.rsplit(" ", 1)[-1]
                    summary = work / f"{mode}.json"
                    if name.startswith("clip-worker") and summary.exists():
                        result = json.loads(summary.read_text())
                        o.cut_path = result.get("cutPath", "")
                        t = result.get("timings", {})
                        o.phases = ", ".join(
                            f"{k.removesuffix('Seconds')} {v:.2f}" for k, v in t.items()
                        )
                out.unlink(missing_ok=True)
        outcomes = list(results.values())
    for srv in (server, bulk):
        srv.shutdown()
        srv.server_close()
    context = {"index": index, "clip": clip, "start": start, "end": end, "spec": spec,
               "size": source.stat().st_size, "fps": spec.fps}  # fmt: skip
    return outcomes, context


def _ffmpeg_version() -> str:
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=30)
    return out.stdout.split()[2]


def render(outcomes: list[Outcome], ctx: dict[str, Any], command: str, rounds: int) -> str:
    """The "## clip" section of bench/RESULTS.md."""
    need = ctx["index"] + ctx["clip"]
    fps = ctx["fps"]
    spec: BenchSource = ctx["spec"]
    lines = [
        "## clip",
        "",
        f"A {ctx['end'] - ctx['start']:g} s clip at {ctx['start']:g} s "
        f"({int(ctx['start'] // 60)}:{ctx['start'] % 60:04.1f}, between keyframes) of a "
        f"{spec.seconds // 60}-minute {spec.width}x{spec.height} {fps} fps H.264 "
        f"({spec.preset}, CRF {spec.crf}, {spec.bframes} B-frames, keyframe every "
        f"{spec.gop_seconds} s) + AAC MP4 with the index first ({ctx['size'] / 1e6:.0f} MB), "
        "served by `tests/mediaserver.py` on 127.0.0.1, which counts the bytes it sends.",
        f"Unavoidable bytes: index {ctx['index'] / 1e3:.0f} kB + keyframe-before-start to end "
        f"{ctx['clip'] / 1e6:.2f} MB = {need / 1e6:.2f} MB.",
        "",
        f"Command: `{command}` — {rounds} rounds, wall time is the median; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs shared with other work, "
        f"FFmpeg {_ffmpeg_version()}.",
        "",
        "| method | wall s | bytes fetched | / unavoidable | duration s | frames "
        "| first frame shown | first frame stored |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]  # fmt: skip

    def frame(offset: int) -> str:
        return "exact" if offset == 0 else f"{offset:+d} frames ({offset / fps:+.2f} s)"

    for o in outcomes:
        name = o.name + (f" (cutPath `{o.cut_path}`)" if o.cut_path else "")
        median_bytes = statistics.median(o.bytes)
        lines.append(
            f"| {name} | {statistics.median(o.walls):.2f} | {median_bytes / 1e6:.2f} MB | "
            f"{median_bytes / need:.2f} | {o.duration:.3f} | {o.frames} | "
            f"{frame(o.shown[0])}, {o.shown[1]:.1f} dB | {frame(o.stored)} |"
        )
    by = {o.name: statistics.median(o.walls) for o in outcomes}
    phases = [f"- {o.name} phases (round 1, s): {o.phases}" for o in outcomes if o.phases]
    walls = {o.name: o.walls for o in outcomes}

    def paired(ours: str, theirs: str) -> str:
        ratios = [a / b for a, b in zip(walls[ours], walls[theirs], strict=True)]
        listed = ", ".join(f"{r:.2f}" for r in ratios)
        return f"{listed} (median {statistics.median(ratios):.2f})"

    phases.insert(
        0,
        "- per-round paired ratios (robust to load drifting during the run): accurate / "
        "--force-keyframes-at-cuts "
        + paired("clip-worker accurate", "yt-dlp --download-sections --force-keyframes-at-cuts")
        + "; fast / default "
        + paired("clip-worker fast", "yt-dlp --download-sections"),
    )
    accurate = (
        by["clip-worker accurate"] / by["yt-dlp --download-sections --force-keyframes-at-cuts"]
    )
    fast = by["clip-worker fast"] / by["yt-dlp --download-sections"]
    lines += [
        "",
        f"- accurate / yt-dlp --force-keyframes-at-cuts wall time: {accurate:.2f} "
        f"(target <= 0.50: {'met' if accurate <= 0.5 else 'NOT met'})",
        f"- fast / yt-dlp default section download wall time: {fast:.2f} "
        f"(target <= 1.00: {'met' if fast <= 1.0 else 'NOT met'})",
        *phases,
        "- \"first frame shown\" is what FFmpeg decodes first (edit lists honoured), matched "
        "by PSNR against the source frames from the keyframe before the start to one after; "
        "\"stored\" ignores edit lists (`-ignore_editlist 1`): the lead-in a player that "
        "ignores edit lists shows. clip-worker's wall time includes Python start-up, the "
        "yt-dlp extraction and the S3 upload to a local versitygw.",
        "- The clip methods share one server whose 32 KiB send buffer keeps byte counts "
        "exact; the full download uses a second server with default buffers (the small "
        "buffer caps one loopback connection at a few MB/s).",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=float, default=2700.6, help="clip start, seconds")
    parser.add_argument("--length", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=60, help="source length (smoke runs)")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)
    if "CLIP_S3_ENDPOINT" not in os.environ:
        parser.error('needs an S3 server: hack/s3.sh start && eval "$(hack/s3.sh env)"')
    outcomes, ctx = measure(args)
    command = "python -m bench.clip.run" + (f" {shlex.join(argv)}" if argv else "")
    section = render(outcomes, ctx, command, args.rounds)
    print(section)
    write_section(args.results, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
