"""Frame-accuracy matrix: source shapes x windows x output paths, each through the worker.

For every encoded path the clip must hold exactly the source frames in [start, end): the
frame count is exact, and its first and last frames match those source frames better than
their neighbours (PSNR). A stream copy is keyframe-aligned by design (job-image/README.md):
it must start at the keyframe at or before `start`; MP4 hides that lead-in with an edit
list (the shown frames are exact), WebM shows it.

Small sources (320x180, 20-30 s) keep the 60 runs to a few minutes on 2 busy cores.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.mediaserver import MediaHTTPServer
from tests.plugins.media import ShapeSet, decoded_frames, ffprobe_json, run_worker

pytestmark = pytest.mark.integration

EPS = 0.0005
COPY_TAIL = 3  # clip_worker.verify.COPY_TAIL_FRAMES
MATCH_DB = 30.0
SHAPES = {
    # name: (ShapeSet attribute, duration in seconds, reference file for the PSNR checks)
    "pal-2s-gop": ("pal", 30.0, "pal"),
    "ntsc-10s-gop-bframes-index-last": ("ntsc", 30.0, "ntsc"),
    "vp9-opus-webm": ("vp9", 20.0, "vp9"),
    # Frame n of the HLS rendition is frame n of the MP4 it was cut from, which decodes
    # exactly from any frame (seeking onto an HLS segment's first frame does not).
    "hls-ntsc": ("hls", 30.0, "ntsc"),
}
WINDOWS = {
    "file-start": lambda d: (0.0, 2.0),
    "off-grid": lambda d: (7.31, 9.53),
    "across-keyframe": lambda d: (9.5, 12.2),
    "sub-second": lambda d: (15.27, 15.71),
    "last-second": lambda d: (d - 1.0, d),
}
# (output format, mode); "fast" copies the source's own codecs (mp4 for H.264, webm for VP9).
PATHS = ["mp4-accurate", "webm-accurate", "fast-copy"]


@functools.cache
def _origin(path: Path) -> float:
    """Where the timeline starts: MPEG-TS (HLS) timestamps start at the stream's start time;
    MP4/WebM timestamps are the timeline (a negative start is priming, not a lead)."""
    start = ffprobe_json(path, "-show_entries", "format=start_time")["format"]["start_time"]
    return max(0.0, float(start)) if start not in (None, "N/A") else 0.0


@functools.cache
def _frames(path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(all frame times, keyframe times) of a source on its timeline, sorted."""
    data = ffprobe_json(path, "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags")
    origin = _origin(path)
    times, keys = [], []
    for packet in data["packets"]:
        if packet.get("pts_time") in (None, "N/A"):
            continue
        times.append(float(packet["pts_time"]) - origin)
        if "K" in packet["flags"]:
            keys.append(float(packet["pts_time"]) - origin)
    return tuple(sorted(times)), tuple(sorted(keys))


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=120)


def _scores(source: Path, times: tuple[float, ...], index: int, image: Path, after: int = 1
            ) -> dict[int, float]:  # fmt: skip
    """PSNR of `image` against source frames index-1 .. index+after (one FFmpeg run)."""
    first = max(0, index - 1)
    last = min(len(times) - 1, index + after)
    with tempfile.TemporaryDirectory(prefix="psnr-") as tmp:
        stats = Path(tmp) / "psnr.log"
        seek = max(0.0, times[first] + _origin(source) - 0.001)  # MP4/WebM: origin 0
        # Absolute timestamps: without -seek_timestamp, -ss counts from the file's start time.
        _ffmpeg("-seek_timestamp", "1", "-ss", f"{seek:.6f}", "-i", str(source),
                "-loop", "1", "-i", str(image),
                "-lavfi", f"[0:v][1:v]psnr=stats_file={stats}:shortest=1",
                "-frames:v", str(last - first + 1), "-f", "null", "-")  # fmt: skip
        scores = {}
        for line in stats.read_text().splitlines():
            fields = dict(item.split(":", 1) for item in line.split() if ":" in item)
            value = fields["psnr_avg"]
            scores[first + int(fields["n"]) - 1 - index] = (
                float("inf") if value == "inf" else float(value)
            )
    return scores


def _best(source: Path, times: tuple[float, ...], index: int, image: Path, after: int = 1
          ) -> int:  # fmt: skip
    """Offset from `index` of the source frame `image` shows (asserting a clear match)."""
    scores = _scores(source, times, index, image, after)
    best = max(scores, key=lambda k: scores[k])
    assert scores[best] >= MATCH_DB, f"no source frame near {index} matches: {scores}"
    return best


def _assert_frame(source: Path, times: tuple[float, ...], index: int, image: Path, what: str
                  ) -> None:  # fmt: skip
    offset = _best(source, times, index, image)
    assert offset == 0, f"{what} is source frame {index + offset}, not {index} ({times[index]} s)"


def _first_and_last(clip: Path, tmp: Path, ignore_editlist: bool = False) -> tuple[Path, Path]:
    first, last = tmp / "first.png", tmp / "last.png"
    pre = ["-ignore_editlist", "1"] if ignore_editlist and clip.suffix == ".mp4" else []
    _ffmpeg(*pre, "-i", str(clip), "-frames:v", "1", str(first))
    _ffmpeg("-sseof", "-1", "-i", str(clip), "-update", "1", str(last))
    return first, last


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_frame_accuracy(
    shape: str, window: str, path: str, shapes: ShapeSet, shapes_server: MediaHTTPServer,
    s3_server: Any, s3_bucket: str, tmp_path: Path,
) -> None:  # fmt: skip
    attr, duration, ref = SHAPES[shape]
    name = getattr(shapes, attr)
    source = shapes.path(name)
    reference = shapes.path(getattr(shapes, ref))
    ref_times = _frames(reference)[0]
    start, end = WINDOWS[window](duration)
    copy = path == "fast-copy"
    fmt = ("webm" if attr == "vp9" else "mp4") if copy else path.split("-")[0]
    env = {
        "CLIP_SOURCE_URL": f"{shapes_server.url}/{name}",
        "CLIP_START": f"{start:g}",
        "CLIP_END": f"{end:g}",
        "CLIP_OUTPUT_FORMAT": fmt,
        "CLIP_MODE": "fast" if copy else "accurate",
        "CLIP_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
        "CLIP_ALLOW_PORTS": str(shapes_server.server_address[1]),
        **s3_server.env(),
        "CLIP_S3_BUCKET": s3_bucket,
        "CLIP_S3_KEY": f"m.{fmt}",
    }
    run = run_worker(env, tmp_path)
    assert run.returncode == 0, (run.result, run.stderr[-1500:])
    clip = tmp_path / f"m.{fmt}"
    body = s3_server.client().get_object(Bucket=s3_bucket, Key=f"m.{fmt}")["Body"].read()
    clip.write_bytes(body)
    times, keys = _frames(source)
    wanted = [i for i, t in enumerate(times) if start - EPS <= t < end - EPS]
    frames = decoded_frames(clip)
    if copy:
        # Documented keyframe alignment: the copy starts at the keyframe at or before
        # start (MP4 hides the lead-in with an edit list, WebM shows it), and packets are
        # cut in decode order, so up to COPY_TAIL frames past `end` may ride along.
        assert run.result["cutPath"] == "copy"
        keyframe = max((k for k in keys if k <= start + EPS), default=keys[0])
        first_stored = times.index(keyframe)
        stored, last = _first_and_last(clip, tmp_path, ignore_editlist=True)
        _assert_frame(reference, ref_times, first_stored, stored, "the first stored frame")
        # The last packet in decode order before `end` can be a P-frame shown a few frames
        # later than the B-frames left out before it.
        tail = _best(reference, ref_times, wanted[-1], last, after=2 * COPY_TAIL)
        assert 0 <= tail <= 2 * COPY_TAIL, f"the last frame is {tail} frames past the last wanted"
        shown = len(wanted) if fmt == "mp4" else wanted[-1] - first_stored + 1
        assert shown <= frames <= shown + COPY_TAIL, (frames, shown, tail)
        return
    assert run.result["cutPath"] in ("smart", "reencode")
    assert frames == len(wanted), (frames, len(wanted), run.result)
    first, last = _first_and_last(clip, tmp_path)
    _assert_frame(reference, ref_times, wanted[0], first, "the first frame")
    _assert_frame(reference, ref_times, wanted[-1], last, "the last frame")
