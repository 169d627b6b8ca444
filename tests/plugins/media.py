"""Pytest plugin: generated test videos, a range-capable HTTP server, and a worker runner.

Media is generated with FFmpeg's lavfi sources (testsrc2, which prints the time and
frame number in its top-left corner, plus a sine tone; a keyframe every 2 s) and cached
under `${CLIP_CACHE:-~/.cache/clip-operator}/media/<hash of the recipe>/`, so only the
first run pays for it (about half a minute on 2 cores).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.mediaserver import MediaHTTPServer


@dataclass(frozen=True)
class MediaSpec:
    """The recipe; its hash names the cache directory (bump `recipe` when code changes)."""

    seconds: int = 360
    width: int = 640
    height: int = 360
    fps: int = 25
    gop_seconds: int = 2
    crf: int = 30
    preset: str = "ultrafast"
    audio_rate: int = 48000
    hls_segment_seconds: int = 4
    bframes_seconds: int = 60
    recipe: int = 2

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class MediaSet:
    """Generated files, all under `root` (what the media server serves)."""

    root: Path
    spec: MediaSpec
    faststart: str = "long_faststart.mp4"  # index (moov) before the data
    moov_end: str = "long_moov_end.mp4"  # index after the data
    hls: str = "hls/index.m3u8"  # MPEG-TS segments
    video_only: str = "video_only.mp4"
    audio_only: str = "audio_only.m4a"
    garbage: str = "garbage.mp4"  # served as video/mp4, but random bytes
    bframes: str = "bframes.mp4"  # 1 minute with B-frames (reordered packets), like most sites
    extra: dict[str, str] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.root / name


def cache_root() -> Path:
    base = os.environ.get("CLIP_CACHE") or os.path.expanduser("~/.cache/clip-operator")
    return Path(base) / "media"


def _ffmpeg(*args: str, timeout: float = 900) -> None:
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    subprocess.run(cmd, check=True, timeout=timeout)


def generate(spec: MediaSpec, root: Path) -> None:
    """Write every file of a MediaSet into `root`."""
    s = spec
    gop = s.fps * s.gop_seconds
    src = root / "long_moov_end.mp4"
    _ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={s.width}x{s.height}:rate={s.fps}",
        "-f", "lavfi", "-i", f"sine=frequency=440:beep_factor=4:sample_rate={s.audio_rate}",
        "-t", str(s.seconds), "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", s.preset, "-crf", str(s.crf), "-pix_fmt", "yuv420p",
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", "64k", str(src),
    )  # fmt: skip
    _ffmpeg(
        "-i", str(src), "-c", "copy", "-movflags", "+faststart", str(root / "long_faststart.mp4")
    )
    _ffmpeg("-i", str(src), "-map", "0:v", "-c", "copy", "-movflags", "+faststart",
            str(root / "video_only.mp4"))  # fmt: skip
    _ffmpeg("-i", str(src), "-map", "0:a", "-c", "copy", "-movflags", "+faststart",
            str(root / "audio_only.m4a"))  # fmt: skip
    (root / "hls").mkdir()
    _ffmpeg(
        "-i", str(src), "-c", "copy", "-f", "hls", "-hls_time", str(s.hls_segment_seconds),
        "-hls_playlist_type", "vod", "-hls_segment_filename", str(root / "hls" / "seg%04d.ts"),
        str(root / "hls" / "index.m3u8"),
    )  # fmt: skip
    _ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={s.width}x{s.height}:rate={s.fps}",
        "-f", "lavfi", "-i", f"sine=frequency=660:sample_rate={s.audio_rate}",
        "-t", str(s.bframes_seconds), "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", s.preset, "-bf", "3", "-crf", str(s.crf),
        "-pix_fmt", "yuv420p", "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", str(root / "bframes.mp4"),
    )  # fmt: skip
    (root / "garbage.mp4").write_bytes(hashlib.sha256(b"x").digest() * 32768)


def ensure_media(spec: MediaSpec | None = None) -> MediaSet:
    """Generate (once) and return the cached media set."""
    spec = spec or MediaSpec()
    final = cache_root() / spec.digest()
    if not (final / ".complete").exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=final.parent))
        tmp.chmod(0o755)
        try:
            generate(spec, tmp)
            (tmp / "spec.json").write_text(json.dumps(asdict(spec), indent=1))
            (tmp / ".complete").write_text("ok\n")
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return MediaSet(root=final, spec=spec)


# ---- probing helpers used by the tests ---------------------------------------------------


def ffprobe_json(path: str | Path, *entries: str) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", *entries, str(path)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def media_duration(path: str | Path) -> float:
    return float(ffprobe_json(path, "-show_entries", "format=duration")["format"]["duration"])


def decoded_frames(path: str | Path) -> int:
    data = ffprobe_json(
        path, "-select_streams", "v:0", "-count_frames", "-show_entries", "stream=nb_read_frames"
    )
    return int(data["streams"][0]["nb_read_frames"])


def psnr(reference: str | Path, candidate: str | Path) -> float:
    """PSNR (dB, average of Y/U/V) of two single images, with FFmpeg's psnr filter."""
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-i", str(candidate), "-i", str(reference),
         "-lavfi", "[0:v][1:v]psnr", "-f", "null", "-"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    for line in out.stderr.splitlines():
        if "PSNR" in line and "average:" in line:
            value = line.split("average:", 1)[1].split()[0]
            return float("inf") if value == "inf" else float(value)
    raise AssertionError(f"no PSNR in ffmpeg output: {out.stderr[-500:]}")


def extract_frame(source: str | Path, index: int, out: str | Path) -> None:
    """Decode frame number `index` (0-based) of a local file to a PNG."""
    _ffmpeg("-i", str(source), "-vf", f"select=eq(n\\,{index})", "-fps_mode", "passthrough",
            "-frames:v", "1", str(out))  # fmt: skip


def first_frame(source: str | Path, out: str | Path) -> None:
    _ffmpeg("-i", str(source), "-frames:v", "1", str(out))


def last_frame(source: str | Path, out: str | Path) -> None:
    """The last decoded frame (decodes the final second, keeps overwriting one image)."""
    _ffmpeg("-sseof", "-1", "-i", str(source), "-update", "1", str(out))


# ---- running the worker like the Job does -----------------------------------------------


@dataclass
class WorkerRun:
    """Exit code, termination-log JSON and stderr of one worker process."""

    returncode: int
    result: dict[str, Any]
    stderr: str


def worker_env(
    url: str, start: float, end: float, fmt: str = "mp4", mode: str = "accurate", **extra: str
) -> dict[str, str]:
    """A worker's CLIP_* inputs for a source on the local media server (its port allowed)."""
    env = {
        "CLIP_SOURCE_URL": url,
        "CLIP_START": f"{start:g}",
        "CLIP_END": f"{end:g}",
        "CLIP_OUTPUT_FORMAT": fmt,
        "CLIP_MODE": mode,
        "CLIP_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
        "CLIP_ALLOW_PORTS": url.split("/")[2].rpartition(":")[2],  # the media server's port
        "CLIP_NETWORK_TIMEOUT_SECONDS": "10",
        "CLIP_S3_BUCKET": "clips",
        "CLIP_S3_KEY": "media/clip",
        # Unreachable on purpose: tests that fail before the upload never touch S3.
        "CLIP_S3_ENDPOINT": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "none",
        "AWS_SECRET_ACCESS_KEY": "none",
    }
    env.update(extra)
    return env


def s3_target(s3_server: Any, bucket: str, key: str) -> dict[str, str]:
    """Upload to this object of the test S3 server."""
    return {**s3_server.env(), "CLIP_S3_BUCKET": bucket, "CLIP_S3_KEY": key}


def run_worker(env: Mapping[str, str], tmp: Path, timeout: float = 300) -> WorkerRun:
    """Run `python -m clip_worker` as a subprocess with CLIP_* env vars."""
    log = tmp / "termination-log"
    full = {k: v for k, v in os.environ.items() if not k.startswith(("CLIP_", "AWS_"))}
    full.update({"CLIP_TERMINATION_LOG": str(log), "CLIP_WORK_DIR": str(tmp / "scratch")})
    full.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "clip_worker"], env=full, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    text = log.read_text() if log.exists() else ""
    assert len(text.encode()) < 4096, "termination message over 4 KiB"
    result = json.loads(text) if text else {}
    return WorkerRun(proc.returncode, result, proc.stderr)


@pytest.fixture(scope="session")
def media() -> MediaSet:
    """The generated test media (cached across runs)."""
    if not shutil.which("ffmpeg") or not shutil.which("ffprobe"):
        pytest.skip("ffmpeg/ffprobe not installed")
    return ensure_media()


@pytest.fixture(scope="session")
def media_server(media: MediaSet) -> Iterator[MediaHTTPServer]:
    """The media directory over HTTP on 127.0.0.1 and a free port."""
    server = MediaHTTPServer(media.root, "127.0.0.1", 0)
    server.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


# ---- small sources of the shapes the worker met in the field (issue 13) ------------------


@dataclass(frozen=True)
class ShapeSpec:
    """Recipe of the small shape sources (320x180, short): the frame-accuracy matrix and the
    worker's correctness tests run many clips, so every source decodes in a blink."""

    seconds: int = 30
    width: int = 320
    height: int = 180
    crf: int = 20
    truncate_fraction: float = 0.45
    recipe: int = 4

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return "shapes-" + hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ShapeSet:
    """Generated shape sources under `root`; `fps` gives each video file's exact frame rate."""

    root: Path
    spec: ShapeSpec
    pal: str = "pal_2s_gop.mp4"  # 25 fps, keyframe every 2 s, index first
    ntsc: str = "ntsc_10s_gop.mp4"  # 30000/1001 fps, keyframe every 10 s, B-frames, index last
    vp9: str = "vp9_opus.webm"  # VP9 + Opus, 25 fps, keyframe every 2 s
    truncated: str = "truncated.mp4"  # `pal` with its last bytes cut off (index says 30 s)
    audio_longer: str = "audio_longer.mp4"  # video ends at 8 s, audio at 8.5 s
    corrupt: str = "corrupt.mp4"  # `pal` with noise for media data after its first 6 s
    hls: str = "hls/index.m3u8"  # `ntsc` as HLS (MPEG-TS segments, audio leads the video)
    fps: dict[str, float] = field(
        default_factory=lambda: {
            "pal_2s_gop.mp4": 25.0,
            "ntsc_10s_gop.mp4": 30000 / 1001,
            "vp9_opus.webm": 25.0,
            "truncated.mp4": 25.0,
            "audio_longer.mp4": 25.0,
            "hls/index.m3u8": 30000 / 1001,
        }
    )

    def path(self, name: str) -> Path:
        return self.root / name


def generate_shapes(spec: ShapeSpec, root: Path) -> None:
    """Write every file of a ShapeSet into `root`."""
    s = spec
    size = f"{s.width}x{s.height}"

    def h264(rate: str, gop: int, seconds: float, out: Path, *extra: str,
             audio_seconds: float | None = None) -> None:  # fmt: skip
        _ffmpeg(
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
            "-f", "lavfi", "-i", "sine=frequency=440:beep_factor=4:sample_rate=48000:"
            f"duration={audio_seconds or seconds}",
            "-map", "0:v", "-map", "1:a",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", str(s.crf), "-pix_fmt", "yuv420p",
            "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", *extra,
            "-c:a", "aac", "-b:a", "64k", str(out),
        )  # fmt: skip

    h264("25", 50, s.seconds, root / "pal_2s_gop.mp4", "-bf", "0", "-movflags", "+faststart")
    h264("30000/1001", 300, s.seconds, root / "ntsc_10s_gop.mp4", "-bf", "3")
    h264("25", 50, 8, root / "audio_longer.mp4", "-bf", "0", "-movflags", "+faststart",
         audio_seconds=8.5)  # fmt: skip
    _ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:beep_factor=4:sample_rate=48000",
        "-t", "20", "-map", "0:v", "-map", "1:a",
        "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "0",
        "-crf", "30", "-g", "50", "-keyint_min", "50", "-pix_fmt", "yuv420p",
        "-c:a", "libopus", "-b:a", "64k", str(root / "vp9_opus.webm"),
    )  # fmt: skip
    (root / "hls").mkdir()
    _ffmpeg(
        "-i", str(root / "ntsc_10s_gop.mp4"), "-c", "copy", "-f", "hls", "-hls_time", "4",
        "-hls_playlist_type", "vod", "-hls_segment_filename", str(root / "hls" / "seg%03d.ts"),
        str(root / "hls" / "index.m3u8"),
    )  # fmt: skip
    whole = (root / "pal_2s_gop.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(whole[: int(len(whole) * s.truncate_fraction)])
    # The index intact, the media data after the first fifth replaced by noise.
    keep = len(whole) // 5
    noise = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest()
                     for i in range((len(whole) - keep) // 32 + 1))  # fmt: skip
    (root / "corrupt.mp4").write_bytes(whole[:keep] + noise[: len(whole) - keep])


def _cached(digest: str, write: Any) -> Path:
    final = cache_root() / digest
    if not (final / ".complete").exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=final.parent))
        tmp.chmod(0o755)
        try:
            write(tmp)
            (tmp / ".complete").write_text("ok\n")
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_shapes(spec: ShapeSpec | None = None) -> ShapeSet:
    """Generate (once, a few seconds) and return the cached shape sources."""
    spec = spec or ShapeSpec()
    return ShapeSet(root=_cached(spec.digest(), lambda tmp: generate_shapes(spec, tmp)), spec=spec)


@pytest.fixture(scope="session")
def shapes() -> ShapeSet:
    """The small shape sources (cached across runs)."""
    if not shutil.which("ffmpeg") or not shutil.which("ffprobe"):
        pytest.skip("ffmpeg/ffprobe not installed (apt-get install ffmpeg)")
    return ensure_shapes()


@pytest.fixture(scope="session")
def shapes_server(shapes: ShapeSet) -> Iterator[MediaHTTPServer]:
    """The shape sources over HTTP on 127.0.0.1 and a free port."""
    server = MediaHTTPServer(shapes.root, "127.0.0.1", 0)
    server.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
