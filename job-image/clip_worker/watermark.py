"""The watermark: an image fetched through the egress guard, overlaid in a corner.

The image URL is treated like the source: http(s) only, through the egress proxy (so the
address and port checks and pinning apply, and a refusal has the one message), at most
`MAX_BYTES`. Only PNG, JPEG and WebP are accepted, recognised by their first bytes, and
FFmpeg reads the file with that one image demuxer and the `file` protocol only: a
"watermark" that is really a playlist or anything else FFmpeg could follow never opens
another URL. The image is scaled to a share of the output width and drawn after the
captions, `MARGIN` of the width from its corner, with the requested opacity.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from clip_worker.options import Watermark
from clip_worker.result import Reason, WorkerError
from clip_worker.vetting import guarded_get

log = logging.getLogger("clip_worker")

MAX_BYTES = 5 * 1024 * 1024
MARGIN = 0.03  # of the output width, between the image and the frame's edges
# First bytes -> (FFmpeg demuxer, file suffix).
_KINDS = ((b"\x89PNG\r\n\x1a\n", "png_pipe", "png"), (b"\xff\xd8\xff", "jpeg_pipe", "jpg"))


@dataclass(frozen=True)
class Image:
    """The fetched image in scratch and the demuxer that reads it."""

    path: str
    demuxer: str

    def input_args(self) -> list[str]:
        return ["-protocol_whitelist", "file", "-f", self.demuxer, "-i", self.path]


def _kind(head: bytes) -> tuple[str, str] | None:
    for magic, demuxer, suffix in _KINDS:
        if head.startswith(magic):
            return demuxer, suffix
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp_pipe", "webp"
    return None


def fetch(mark: Watermark, proxy_url: str, timeout: float, work: str) -> Image:
    """GET the image through the egress proxy and keep it in scratch."""
    what = "the watermark image"
    body = guarded_get(mark.url, what, proxy_url, timeout, MAX_BYTES)
    if len(body) > MAX_BYTES:
        raise WorkerError(Reason.INVALID_INPUT, f"{what} is over {MAX_BYTES} bytes")
    kind = _kind(body[:16])
    if kind is None:
        raise WorkerError(Reason.INVALID_INPUT, f"{what} is not a PNG, JPEG or WebP image")
    demuxer, suffix = kind
    path = os.path.join(work, f"watermark.{suffix}")
    with open(path, "wb") as handle:
        handle.write(body)
    log.info("watermark: %d bytes (%s)", len(body), suffix)
    return Image(path, demuxer)


def overlay_graph(mark: Watermark, out_width: int, base: str, image: str, out: str) -> str:
    """Filter graph text: scale `image` to its share of the width, set its opacity and
    overlay it on `base` in its corner; the result is labelled `out`."""
    width = max(2, round(out_width * mark.width / 2) * 2)
    margin = round(out_width * MARGIN)
    x = f"{margin}" if mark.position.endswith("left") else f"main_w-overlay_w-{margin}"
    y = f"{margin}" if mark.position.startswith("top") else f"main_h-overlay_h-{margin}"
    return (
        f"[{image}]scale={width}:-2,format=rgba,colorchannelmixer=aa={mark.opacity:g}[wm];"
        f"[{base}][wm]overlay=x={x}:y={y}:format=auto[{out}]"
    )
