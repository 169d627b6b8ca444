"""The media options of issue 16 (captions, crop, loudness), read from CLIP_* variables.

Each is off unless its variables are set; any of them that touches every frame (captions,
crop) makes the clip a full re-encode. The operator checks the same limits at admission
(crds/clipjob.yaml); the worker re-checks them so that standalone use fails clearly.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from clip_worker.result import Reason, WorkerError

MAX_CAPTION_CHARS = 300
_ASPECT = re.compile(r"^([1-9][0-9]{0,3}):([1-9][0-9]{0,3})$")
MAX_ASPECT_RATIO = 10.0  # W:H between 1:10 and 10:1
DEFAULT_LOUDNESS_LUFS = -14.0
DEFAULT_TRUE_PEAK_DBTP = -1.0
LOUDNESS_RANGE = (-70.0, -5.0)


@dataclass(frozen=True)
class Captions:
    """Meme text: top and/or bottom, drawn white on a black outline."""

    top: str | None = None
    bottom: str | None = None
    upper_case: bool = False


@dataclass(frozen=True)
class Crop:
    """Crop to `aspect_w:aspect_h` at a horizontal position (0 left .. 1 right)."""

    aspect_w: int
    aspect_h: int
    position: float = 0.5


@dataclass(frozen=True)
class Loudness:
    """EBU R128 normalisation of the clip's audio to `target` LUFS."""

    target: float = DEFAULT_LOUDNESS_LUFS
    true_peak: float = DEFAULT_TRUE_PEAK_DBTP


THUMBNAIL_FORMATS = {
    "jpeg": ("image/jpeg", "jpg"),
    "webp": ("image/webp", "webp"),
    "gif": ("image/gif", "gif"),  # an animated preview (CLIP_THUMBNAIL_SECONDS)
}
PREVIEW_SECONDS = (0.5, 10.0)


@dataclass(frozen=True)
class Thumbnail:
    """A still of the clip at `at` seconds into it, uploaded beside the clip."""

    format: str  # jpeg | webp
    at: float
    key: str
    upload_url: str | None = None  # presigned PUT (made by the operator)
    seconds: float = 0.0  # gif: the animated preview's length (to the clip's end at most)

    @property
    def content_type(self) -> str:
        return THUMBNAIL_FORMATS[self.format][0]


@dataclass(frozen=True)
class Subtitles:
    """Burned-in subtitles: a WebVTT/SRT URL, or the source's own in `language`."""

    url: str | None = None
    language: str | None = None


_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8}){0,3}$")


def subtitles(env: Mapping[str, str]) -> Subtitles | None:
    """CLIP_SUBTITLES_URL (http(s) WebVTT or SRT) or CLIP_SUBTITLES_LANGUAGE (a language
    code of the source's own subtitles, e.g. en, pt-BR), not both."""
    url = env.get("CLIP_SUBTITLES_URL", "").strip() or None
    language = env.get("CLIP_SUBTITLES_LANGUAGE", "").strip() or None
    if url and language:
        raise _invalid("CLIP_SUBTITLES_URL and CLIP_SUBTITLES_LANGUAGE exclude each other")
    if url:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise _invalid("CLIP_SUBTITLES_URL must be an http(s) URL with a host")
    if language and not _LANGUAGE.match(language):
        raise _invalid(
            f"CLIP_SUBTITLES_LANGUAGE must be a language code like en or pt-BR, got {language!r}"
        )
    return Subtitles(url, language) if url or language else None


WATERMARK_POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")


@dataclass(frozen=True)
class Watermark:
    """CLIP_WATERMARK_*: an image URL (fetched through the egress guard) and its drawing."""

    url: str
    position: str = "bottom-right"
    opacity: float = 0.8
    width: float = 0.2  # share of the output width


def _invalid(message: str) -> WorkerError:
    return WorkerError(Reason.INVALID_INPUT, message)


def check_caption(name: str, text: str) -> str:
    """Caption text as given: any Unicode, newlines allowed, no other control characters."""
    if len(text) > MAX_CAPTION_CHARS:
        raise _invalid(f"{name} is {len(text)} characters long; the limit is {MAX_CAPTION_CHARS}")
    for ch in text:
        if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cs"):
            raise _invalid(
                f"{name} contains the control character U+{ord(ch):04X}; only newlines are "
                "allowed besides printable text"
            )
    return text


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise _invalid(f"{name} must be true or false, got {raw!r}")


def captions(env: Mapping[str, str]) -> Captions | None:
    """CLIP_CAPTION_TOP / CLIP_CAPTION_BOTTOM / CLIP_CAPTION_UPPERCASE."""
    top = env.get("CLIP_CAPTION_TOP", "")
    bottom = env.get("CLIP_CAPTION_BOTTOM", "")
    upper = _flag(env, "CLIP_CAPTION_UPPERCASE")
    if not top.strip() and not bottom.strip():
        return None
    return Captions(
        check_caption("CLIP_CAPTION_TOP", top) if top.strip() else None,
        check_caption("CLIP_CAPTION_BOTTOM", bottom) if bottom.strip() else None,
        upper,
    )


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _invalid(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise _invalid(f"{name} must be between {low:g} and {high:g}, got {raw!r}")
    return value


def parse_aspect(name: str, raw: str) -> tuple[int, int]:
    """'9:16' -> (9, 16), reduced; W and H 1-9999 and the ratio within 1:10..10:1."""
    match = _ASPECT.match(raw.strip())
    if not match:
        raise _invalid(f"{name} must be W:H like 9:16, 1:1 or 4:5, got {raw!r}")
    w, h = int(match.group(1)), int(match.group(2))
    if not 1 / MAX_ASPECT_RATIO <= w / h <= MAX_ASPECT_RATIO:
        raise _invalid(f"{name} {raw!r} is wider than 10:1 or narrower than 1:10")
    g = math.gcd(w, h)
    return w // g, h // g


def crop(env: Mapping[str, str]) -> Crop | None:
    """CLIP_CROP_ASPECT (W:H) and CLIP_CROP_POSITION (0..1, default 0.5)."""
    raw = env.get("CLIP_CROP_ASPECT", "").strip()
    position = _number(env, "CLIP_CROP_POSITION", 0.5, 0.0, 1.0)
    if not raw:
        if env.get("CLIP_CROP_POSITION", "").strip():
            raise _invalid("CLIP_CROP_POSITION is set without CLIP_CROP_ASPECT")
        return None
    w, h = parse_aspect("CLIP_CROP_ASPECT", raw)
    return Crop(w, h, position)


def loudness(env: Mapping[str, str]) -> Loudness | None:
    """CLIP_LOUDNESS_TARGET (LUFS, e.g. -14) and CLIP_LOUDNESS_TRUE_PEAK (dBTP, default -1)."""
    if not env.get("CLIP_LOUDNESS_TARGET", "").strip():
        return None
    low, high = LOUDNESS_RANGE
    target = _number(env, "CLIP_LOUDNESS_TARGET", DEFAULT_LOUDNESS_LUFS, low, high)
    peak = _number(env, "CLIP_LOUDNESS_TRUE_PEAK", DEFAULT_TRUE_PEAK_DBTP, -9.0, 0.0)
    return Loudness(target, peak)


def thumbnail(env: Mapping[str, str], clip_key: str, duration: float) -> Thumbnail | None:
    """CLIP_THUMBNAIL_FORMAT (jpeg|webp) turns it on; CLIP_THUMBNAIL_AT (seconds into the
    clip, default 0: the first frame), CLIP_THUMBNAIL_KEY, CLIP_THUMBNAIL_URL."""
    fmt = env.get("CLIP_THUMBNAIL_FORMAT", "").strip().lower()
    if not fmt:
        for name in ("CLIP_THUMBNAIL_AT", "CLIP_THUMBNAIL_URL", "CLIP_THUMBNAIL_KEY"):
            if env.get(name, "").strip():
                raise _invalid(f"{name} is set without CLIP_THUMBNAIL_FORMAT")
        return None
    if fmt not in THUMBNAIL_FORMATS:
        raise _invalid(f"CLIP_THUMBNAIL_FORMAT must be jpeg, webp or gif, got {fmt!r}")
    at = _number(env, "CLIP_THUMBNAIL_AT", 0.0, 0.0, 600.0)
    if at >= duration:
        raise _invalid(
            f"CLIP_THUMBNAIL_AT ({at:g} s) must be inside the clip, which lasts {duration:g} s"
        )
    default_key = f"{clip_key}.thumb.{THUMBNAIL_FORMATS[fmt][1]}"
    key = env.get("CLIP_THUMBNAIL_KEY", "").strip() or default_key
    url = env.get("CLIP_THUMBNAIL_URL", "").strip() or None
    seconds = 0.0
    if fmt == "gif":
        seconds = min(_number(env, "CLIP_THUMBNAIL_SECONDS", 3.0, *PREVIEW_SECONDS), duration - at)
    elif env.get("CLIP_THUMBNAIL_SECONDS", "").strip():
        raise _invalid("CLIP_THUMBNAIL_SECONDS is for the animated preview (format gif) only")
    return Thumbnail(fmt, at, key, url, seconds)


def watermark(env: Mapping[str, str]) -> Watermark | None:
    """CLIP_WATERMARK_URL (http(s)) turns it on; CLIP_WATERMARK_POSITION (a corner, default
    bottom-right), CLIP_WATERMARK_OPACITY (0-1, default 0.8), CLIP_WATERMARK_WIDTH (share of
    the output width, 0.02-1, default 0.2)."""
    url = env.get("CLIP_WATERMARK_URL", "").strip()
    names = ("CLIP_WATERMARK_POSITION", "CLIP_WATERMARK_OPACITY", "CLIP_WATERMARK_WIDTH")
    if not url:
        for name in names:
            if env.get(name, "").strip():
                raise _invalid(f"{name} is set without CLIP_WATERMARK_URL")
        return None
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _invalid("CLIP_WATERMARK_URL must be an http(s) URL with a host")
    position = env.get("CLIP_WATERMARK_POSITION", "").strip().lower() or "bottom-right"
    if position not in WATERMARK_POSITIONS:
        raise _invalid(
            f"CLIP_WATERMARK_POSITION must be one of {', '.join(WATERMARK_POSITIONS)}, "
            f"got {position!r}"
        )
    opacity = _number(env, "CLIP_WATERMARK_OPACITY", 0.8, 0.0, 1.0)
    width = _number(env, "CLIP_WATERMARK_WIDTH", 0.2, 0.02, 1.0)
    return Watermark(url, position, opacity, width)
