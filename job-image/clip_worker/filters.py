"""The video filter chain of a re-encode: crop, scale, captions (and the GIF palette).

The output size is computed here, in Python, before FFmpeg runs: the captions are laid
out for the exact frame they are drawn on, and the crop keeps the exact aspect asked for
(both sides multiples of the reduced W:H, and even, as yuv420p needs).
"""

from __future__ import annotations

from dataclasses import dataclass

from clip_worker import overlay, probe, subtitles, watermark
from clip_worker.config import Config
from clip_worker.options import Crop
from clip_worker.result import Reason, WorkerError

Cues = tuple[subtitles.Cue, ...] | list[subtitles.Cue]
GIF_MAX_WIDTH = 480
GIF_MAX_FPS = 15
_MIN_SIDE = 16


@dataclass(frozen=True)
class Geometry:
    """Source size, the crop box in it (None: the whole frame), and the output size."""

    width: int
    height: int
    crop: tuple[int, int, int, int] | None  # w, h, x, y
    out_width: int
    out_height: int


def _even(value: float) -> int:
    return max(2, int(value) - int(value) % 2)


def _exact(aspect_w: int, aspect_h: int, max_w: int, max_h: int) -> tuple[int, int] | None:
    """The largest even W x H in max_w x max_h with exactly the ratio aspect_w:aspect_h."""
    k = min(max_w // aspect_w, max_h // aspect_h)
    if (aspect_w % 2 or aspect_h % 2) and k % 2:
        k -= 1
    if k < 1 or k * min(aspect_w, aspect_h) < _MIN_SIDE:
        return None
    return k * aspect_w, k * aspect_h


def crop_box(crop: Crop, width: int, height: int) -> tuple[int, int, int, int]:
    """The crop rectangle (w, h, x, y): as large as fits, at the horizontal position."""
    box = _exact(crop.aspect_w, crop.aspect_h, width, height)
    if box is None:  # a ratio whose exact multiples do not fit: the nearest even size
        ratio = crop.aspect_w / crop.aspect_h
        if width / height > ratio:
            box = _even(height * ratio), _even(height)
        else:
            box = _even(width), _even(width / ratio)
    w, h = box
    x = round((width - w) * crop.position)
    y = (height - h) // 2  # the position is horizontal; vertically the crop is centred
    return w, h, x, y


def geometry(cfg: Config, width: int, height: int) -> Geometry:
    """Where the frame is cropped and what size the output is (maxHeight, GIF width)."""
    box = crop_box(cfg.crop, width, height) if cfg.crop else None
    w, h = (box[0], box[1]) if box else (width, height)
    limit_h = cfg.max_height if cfg.max_height and h > cfg.max_height else None
    limit_w = GIF_MAX_WIDTH if cfg.output_format == "gif" and w > GIF_MAX_WIDTH else None
    if limit_h or limit_w:
        scale = min((limit_h or h) / h, (limit_w or w) / w)
        exact = None
        if cfg.crop:
            exact = _exact(cfg.crop.aspect_w, cfg.crop.aspect_h, int(w * scale), int(h * scale))
        w, h = exact or (_even(w * scale), _even(h * scale))
    return Geometry(width, height, box, w, h)


def _geometry_of(cfg: Config, info: probe.StreamInfo) -> Geometry:
    if not info.width or not info.height:
        raise WorkerError(Reason.UNSUPPORTED_SOURCE, "the source's video has no frame size")
    return geometry(cfg, info.width, info.height)


def _caption_room(cfg: Config, width: int, height: int) -> float:
    """Pixels a bottom caption takes (subtitles go above it)."""
    if not cfg.captions or not cfg.captions.bottom:
        return 0.0
    text = cfg.captions.bottom.upper() if cfg.captions.upper_case else cfg.captions.bottom
    return overlay.layout(text, width, height).height + height * overlay.MARGIN


def video_chain(cfg: Config, info: probe.StreamInfo, work_dir: str, cues: Cues = ()) -> list[str]:
    """The per-frame filters (crop, scale, captions) for the source's frames, in order."""
    geo = _geometry_of(cfg, info)
    chain: list[str] = []
    if geo.crop:
        w, h, x, y = geo.crop
        chain.append(f"crop={w}:{h}:{x}:{y}")
    size = (geo.crop[0], geo.crop[1]) if geo.crop else (geo.width, geo.height)
    if size != (geo.out_width, geo.out_height):
        chain.append(f"scale={geo.out_width}:{geo.out_height}:flags=lanczos")
    if cfg.captions:
        chain += overlay.drawtext_filters(cfg.captions, geo.out_width, geo.out_height, work_dir)
    if cues:
        above = _caption_room(cfg, geo.out_width, geo.out_height)
        chain += subtitles.drawtext_filters(
            list(cues), geo.out_width, geo.out_height, work_dir, above
        )
    return chain


def _graph(cfg: Config, chain: list[str], out_width: int, mark: int | None, out: str) -> str:
    body = ",".join(chain or ["null"])
    if cfg.watermark is None or mark is None:
        return f"[0:v]{body}[{out}]"
    overlay = watermark.overlay_graph(cfg.watermark, out_width, "base", f"{mark}:v", out)
    return f"[0:v]{body}[base];{overlay}"


def video_graph(
    cfg: Config, info: probe.StreamInfo, work_dir: str, mark: int | None, cues: Cues = ()
) -> str:
    """-filter_complex text: [0:v] through the per-frame filters, then the watermark
    (input `mark`) on top, to the label [v]."""
    geo = _geometry_of(cfg, info)
    return _graph(cfg, video_chain(cfg, info, work_dir, cues), geo.out_width, mark, "v")


def gif_graph(
    cfg: Config,
    info: probe.StreamInfo,
    work_dir: str,
    mark: int | None = None,
    cues: Cues = (),
) -> str:
    """fps, the per-frame filters and the watermark (or the plain GIF scale), then a
    per-clip palette."""
    fps = min(GIF_MAX_FPS, round(info.frame_rate or GIF_MAX_FPS))
    if cfg.filtered:
        geo = _geometry_of(cfg, info)
        chain = [f"fps={fps}", *video_chain(cfg, info, work_dir, cues)]
        head = _graph(cfg, chain, geo.out_width, mark, "frames") + ";[frames]"
    else:
        height = cfg.max_height or 10_000
        head = (
            f"fps={fps},scale='min({GIF_MAX_WIDTH},iw)':'min({height},ih)'"
            ":force_original_aspect_ratio=decrease:flags=lanczos,"
        )
    return (
        f"{head}split[a][b];"
        "[a]palettegen=stats_mode=diff[p];[b][p]paletteuse=dither=bayer:bayer_scale=3"
    )
