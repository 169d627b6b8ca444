"""The thumbnail: one still of the made clip (captions and crop included), uploaded beside it.

It is taken from the clip itself, not the source, so it shows exactly what the clip shows
at `at` seconds (input seeking on a local file decodes from the keyframe before and drops
the frames before `at`: frame-exact). JPEG (quality 2 of mjpeg's 2-31) or WebP (quality
85), the clip's own size; decoded once more before it is uploaded.
"""

from __future__ import annotations

import os
from typing import Any

from clip_worker import presigned, probe
from clip_worker.config import Config
from clip_worker.options import Thumbnail
from clip_worker.process import run
from clip_worker.result import Reason, WorkerError

_CODEC = {
    "jpeg": ["-c:v", "mjpeg", "-q:v", "2", "-pix_fmt", "yuvj420p", "-f", "image2"],
    "webp": ["-c:v", "libwebp", "-quality", "85", "-f", "webp"],
}


PREVIEW_FPS = 10
PREVIEW_MAX_WIDTH = 320


def _preview_args(thumb: Thumbnail) -> list[str]:
    """An animated GIF: `seconds` from `at`, 10 fps, at most 320 px wide, its own palette."""
    graph = (
        f"fps={PREVIEW_FPS},scale='min({PREVIEW_MAX_WIDTH},iw)':-2:flags=lanczos,split[a][b];"
        "[a]palettegen=stats_mode=diff[p];[b][p]paletteuse=dither=bayer:bayer_scale=3"
    )
    return ["-t", f"{thumb.seconds:.6f}", "-filter_complex", graph, "-loop", "0", "-f", "gif"]


def make(cfg: Config, thumb: Thumbnail, clip: str, work: str) -> tuple[str, int, int]:
    """Write the still (or the animated preview); return (path, width, height) as decoded
    from the written file."""
    out = os.path.join(work, f"thumbnail.{thumb.format}")
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    args += ["-ss", f"{thumb.at:.6f}", "-i", clip]
    if thumb.format == "gif":
        args += _preview_args(thumb)
    else:
        args += ["-map", "0:v:0", "-frames:v", "1", *_CODEC[thumb.format]]
    args += [out]
    done = run(args, cfg.process_timeout, "making the thumbnail")
    if done.returncode != 0 or not os.path.exists(out) or os.path.getsize(out) == 0:
        raise WorkerError(Reason.INTERNAL_ERROR, f"making the thumbnail failed: {done.tail()}")
    made = probe.made(out, cfg.process_timeout)
    info = made.info
    if made.errors or not info.width or not info.height:
        raise WorkerError(
            Reason.INTERNAL_ERROR, f"the thumbnail does not decode: {made.errors or 'no size'}"
        )
    if thumb.format == "gif" and made.video_frames < 2:
        raise WorkerError(Reason.INTERNAL_ERROR, "the animated preview has fewer than 2 frames")
    return out, info.width, info.height


def upload(cfg: Config, thumb: Thumbnail, path: str, client: Any | None) -> None:
    """PUT to the operator's presigned URL, or (standalone) boto3 to the thumbnail key."""
    if thumb.upload_url:
        headers = {"Content-Type": thumb.content_type}
        presigned.put(thumb.upload_url, headers, path, b"", cfg.network_timeout)
        return
    from clip_worker.upload import classify, make_client

    try:
        client = client or make_client(cfg)
        extra = {"ContentType": thumb.content_type}
        client.upload_file(path, cfg.s3_bucket, thumb.key, ExtraArgs=extra)
    except Exception as exc:
        raise classify(exc, cfg) from None


def result(thumb: Thumbnail, width: int, height: int, size: int) -> dict[str, Any]:
    """The `thumbnail` object of the result JSON."""
    found = {"key": thumb.key, "contentType": thumb.content_type, "width": width,
             "height": height, "sizeBytes": size, "atSeconds": thumb.at}  # fmt: skip
    if thumb.seconds:
        found["durationSeconds"] = round(thumb.seconds, 3)
    return found
