"""The worker fetches only the bytes a clip needs: the index plus the clip's packets."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.mediaserver import MediaHTTPServer
from tests.plugins.media import MediaSet, ffprobe_json, run_worker

pytestmark = pytest.mark.integration

START = 180.2  # middle of the 6-minute source
END = 190.2
SLACK = 1.2


def _top_level_boxes(path: Path) -> dict[str, int]:
    """Sizes of the top-level MP4 boxes (moov is the index)."""
    sizes: dict[str, int] = {}
    total = path.stat().st_size
    with open(path, "rb") as handle:
        offset = 0
        for _ in range(1000):
            if offset >= total:
                break
            handle.seek(offset)
            header = handle.read(16)
            size, kind = struct.unpack(">I4s", header[:8])
            if size == 1:
                size = struct.unpack(">Q", header[8:16])[0]
            sizes[kind.decode("latin-1")] = size
            offset += size
    return sizes


def needed_bytes(path: Path, start: float, end: float) -> tuple[int, int]:
    """(index size, bytes from the keyframe before start to end), from packet positions."""
    packets = ffprobe_json(path, "-show_entries", "packet=stream_index,pts_time,pos,size,flags")[
        "packets"
    ]
    video = [p for p in packets if p["stream_index"] == 0]
    keyframe = max(
        float(p["pts_time"]) for p in video if "K" in p["flags"] and float(p["pts_time"]) <= start
    )
    inside = [p for p in packets if keyframe <= float(p["pts_time"]) < end]
    low = min(int(p["pos"]) for p in inside)
    high = max(int(p["pos"]) + int(p["size"]) for p in inside)
    return _top_level_boxes(path)["moov"], high - low


@pytest.mark.parametrize("source", ["faststart", "moov_end"])
def test_bytes_served_for_a_middle_clip_are_index_plus_clip(
    source: str,
    media: MediaSet,
    media_server: MediaHTTPServer,
    s3_server: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    name = getattr(media, source)
    index, clip = needed_bytes(media.path(name), START, END)
    bound = SLACK * (index + clip)
    media_server.stats.reset()
    env = {
        **s3_server.env(),
        "CLIP_SOURCE_URL": f"{media_server.url}/{name}",
        "CLIP_START": f"{START}",
        "CLIP_END": f"{END}",
        "CLIP_OUTPUT_FORMAT": "mp4",
        "CLIP_MODE": "fast",
        "CLIP_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
        "CLIP_ALLOW_PORTS": str(media_server.server_address[1]),
        "CLIP_S3_BUCKET": s3_bucket,
        "CLIP_S3_KEY": "bytes.mp4",
    }
    run = run_worker(env, tmp_path)
    assert run.returncode == 0, (run.result, run.stderr[-1500:])
    served = media_server.stats.bytes(f"/{name}")
    total = media.path(name).stat().st_size
    print(
        f"{source}: served {served} B of a {total} B file; index {index} B + clip range "
        f"{clip} B = {index + clip} B; ratio {served / (index + clip):.3f}; "
        f"worker counted {run.result['bytesFetched']} B"
    )
    assert served <= bound, f"served {served} B, bound {bound:.0f} B"
    # The worker's own count (through its egress proxy) sees that traffic too.
    assert clip <= run.result["bytesFetched"] <= served + 64 * 1024


def test_hls_fetches_only_the_segments_covering_the_clip(
    media: MediaSet,
    media_server: MediaHTTPServer,
    s3_server: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    playlist = media.path(media.hls).read_text().splitlines()
    segments: list[tuple[str, float, float]] = []
    t = 0.0
    for i, line in enumerate(playlist):
        if line.startswith("#EXTINF:"):
            length = float(line[8:].split(",")[0])
            segments.append((playlist[i + 1].strip(), t, t + length))
            t += length
    covering = {name for name, t0, t1 in segments if t1 > START and t0 < END}
    names = [name for name, _, _ in segments]
    last = max(names.index(n) for n in covering)
    # FFmpeg reads the first segments to learn the stream parameters, and may open the
    # segment after the clip before it sees the end time.
    allowed = covering | set(names[:2]) | {names[min(last + 1, len(names) - 1)]}
    media_server.stats.reset()
    env = {
        **s3_server.env(),
        "CLIP_SOURCE_URL": f"{media_server.url}/{media.hls}",
        "CLIP_START": f"{START}",
        "CLIP_END": f"{END}",
        "CLIP_OUTPUT_FORMAT": "mp4",
        "CLIP_MODE": "fast",
        "CLIP_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
        "CLIP_ALLOW_PORTS": str(media_server.server_address[1]),
        "CLIP_S3_BUCKET": s3_bucket,
        "CLIP_S3_KEY": "hls.mp4",
    }
    run = run_worker(env, tmp_path)
    assert run.returncode == 0, (run.result, run.stderr[-1500:])
    fetched = {
        path.rsplit("/", 1)[1]
        for path, counts in media_server.stats.snapshot().items()
        if re.search(r"\.ts$", path) and counts["bytes"] > 0
    }
    print(f"HLS segments fetched: {sorted(fetched)}; covering the clip: {sorted(covering)}")
    assert covering <= fetched
    assert fetched <= allowed, sorted(fetched - allowed)
