"""The benchmark sources (testsrc2 + tone, cached like the test media) and, for each, the
bytes a clip cannot do without ("minimum bytes").

- the main source: 60 minutes of 720p 25 fps, keyframe every 2 s, index first;
- `NTSC_MOOV_END`: 29.97 fps (30000/1001), keyframe every 10 s, 3 B-frames, the index
  (moov) at the end of the file (no faststart);
- `hls_of(...)`: the first minutes of the main source remuxed (no re-encode) into HLS with
  `ffmpeg -f hls` (4 s segments, cut at its keyframes), served by the bench's media server.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.plugins.media import cache_root, ffprobe_json


@dataclass(frozen=True)
class BenchSource:
    """Recipe of the source; its hash names the cache directory."""

    seconds: int = 3600
    width: int = 1280
    height: int = 720
    fps: int = 25
    gop_seconds: int = 2
    bframes: int = 2
    crf: int = 30
    preset: str = "ultrafast"
    recipe: int = 1
    rate: str = ""  # an FFmpeg frame rate ("30000/1001") instead of `fps`
    faststart: bool = True  # the index (moov) first; False: at the end of the file

    def digest(self) -> str:
        fields = asdict(self)
        # Fields added later count only when set, so existing recipes keep their cache.
        for name, default in (("rate", ""), ("faststart", True)):
            if fields[name] == default:
                del fields[name]
        text = json.dumps(fields, sort_keys=True)
        return "bench-" + hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def frame_rate(self) -> float:
        if self.rate:
            num, _, den = self.rate.partition("/")
            return float(num) / float(den or 1)
        return float(self.fps)

    def describe(self) -> str:
        rate = "29.97" if self.rate == "30000/1001" else f"{self.frame_rate:g}"
        index = "index first" if self.faststart else "index (moov) at the end"
        return (
            f"{self.seconds // 60}-minute {self.width}x{self.height} {rate} fps H.264 "
            f"({self.preset}, CRF {self.crf}, {self.bframes} B-frames, keyframe every "
            f"{self.gop_seconds} s) + AAC MP4, {index}"
        )


NTSC_MOOV_END = BenchSource(
    seconds=600, rate="30000/1001", gop_seconds=10, bframes=3, faststart=False
)


def _generate(spec: BenchSource, out: Path) -> None:
    rate = spec.rate or str(spec.fps)
    gop = round(spec.frame_rate * spec.gop_seconds)
    cmd = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={spec.width}x{spec.height}:rate={rate}",
        "-f", "lavfi", "-i", "sine=frequency=440:beep_factor=4:sample_rate=48000",
        "-t", str(spec.seconds), "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", spec.preset, "-bf", str(spec.bframes),
        "-crf", str(spec.crf), "-pix_fmt", "yuv420p", "-g", str(gop),
        "-keyint_min", str(gop), "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", "96k",
        *(["-movflags", "+faststart"] if spec.faststart else []), str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=3600)


def _cached(digest: str, make: object) -> Path:
    final = cache_root() / digest
    if (final / ".complete").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=final.parent))
    tmp.chmod(0o755)
    try:
        make(tmp)  # type: ignore[operator]
        (tmp / ".complete").write_text("ok\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_source(spec: BenchSource | None = None) -> Path:
    """Generate (once; the 60-minute one takes ~10 min on 2 cores) and return the
    directory holding source.mp4."""
    spec = spec or BenchSource()

    def make(tmp: Path) -> None:
        _generate(spec, tmp / "source.mp4")
        (tmp / "spec.json").write_text(json.dumps(asdict(spec), indent=1))

    return _cached(spec.digest(), make)


def hls_of(spec: BenchSource, seconds: int, segment_seconds: int = 4) -> Path:
    """The first `seconds` of `spec`'s source as a VOD HLS rendition: index.m3u8 + .ts."""
    source = ensure_source(spec) / "source.mp4"

    def make(tmp: Path) -> None:
        subprocess.run(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
             "-i", str(source), "-t", str(seconds), "-c", "copy", "-f", "hls",
             "-hls_time", str(segment_seconds), "-hls_playlist_type", "vod",
             "-hls_segment_filename", str(tmp / "seg%05d.ts"), str(tmp / "index.m3u8")],
            check=True, timeout=3600,
        )  # fmt: skip

    return _cached(f"{spec.digest()}-hls-{seconds}-{segment_seconds}", make)


def _top_level_boxes(path: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    total = path.stat().st_size
    with open(path, "rb") as handle:
        offset = 0
        for _ in range(1000):
            if offset >= total:
                break
            handle.seek(offset)
            header = handle.read(16)
            if len(header) < 8:
                break
            size, kind = struct.unpack(">I4s", header[:8])
            size = struct.unpack(">Q", header[8:16])[0] if size == 1 else size
            sizes[kind.decode("latin-1")] = size
            offset += size
    return sizes


def mp4_minimum(source: Path, start: float, end: float) -> tuple[int, int]:
    """(index size, bytes from the keyframe before start to end): the unavoidable fetch."""
    packets = ffprobe_json(
        source, "-read_intervals", f"{max(0.0, start - 12)}%{end + 2}",
        "-show_entries", "packet=stream_index,pts_time,pos,size,flags",
    )["packets"]  # fmt: skip
    keys = [float(p["pts_time"]) for p in packets if p["stream_index"] == 0 and "K" in p["flags"]]
    keyframe = max(k for k in keys if k <= start)
    inside = [p for p in packets if keyframe <= float(p["pts_time"]) < end]
    low = min(int(p["pos"]) for p in inside)
    high = max(int(p["pos"]) + int(p["size"]) for p in inside)
    return _top_level_boxes(source)["moov"], high - low


def hls_minimum(directory: Path, start: float, end: float) -> tuple[int, int]:
    """(playlist bytes, bytes of the segments overlapping [start, end))."""
    playlist = directory / "index.m3u8"
    at, total = 0.0, 0
    length = 0.0
    for line in playlist.read_text().splitlines():
        if line.startswith("#EXTINF:"):
            length = float(line.split(":", 1)[1].split(",", 1)[0])
        elif line and not line.startswith("#"):
            if at < end and at + length > start:
                total += (directory / line).stat().st_size
            at += length
    return playlist.stat().st_size, total


if __name__ == "__main__":
    print(ensure_source())
    print(ensure_source(NTSC_MOOV_END))
    print(hls_of(BenchSource(), 600))
