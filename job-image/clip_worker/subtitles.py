"""Subtitle burn-in: WebVTT or SRT cues, timed to the clip, drawn like the captions.

The cues come from a WebVTT/SRT URL (CLIP_SUBTITLES_URL) or from the source's own
subtitles that yt-dlp lists (CLIP_SUBTITLES_LANGUAGE), fetched through the egress proxy.
They are parsed here (no libass, whose override tags would make `{\\...}` in a cue a
command): markup is removed, entities decoded, control characters dropped. Each cue
inside [start, end) is shifted to the clip's timeline and drawn with one `drawtext` per
line (`textfile=`, `expansion=none`, shown only between its times: `enable=between(t,..)`),
white on a black outline, centred near the bottom, above a bottom caption.
"""

from __future__ import annotations

import html
import os
import re
import unicodedata
from dataclasses import dataclass

from clip_worker import fonts, overlay
from clip_worker.result import Reason, WorkerError
from clip_worker.vetting import guarded_get

MAX_BYTES = 2 * 1024 * 1024
MAX_CUES = 400  # inside one clip (600 s at most): more is not a subtitle track
MAX_LINES = 3
_TIME = re.compile(r"^(?:(\d{1,3}):)?([0-5]?\d):([0-5]\d)[.,](\d{1,3})$")
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")


@dataclass(frozen=True)
class Cue:
    """One subtitle: shown from `start` to `end` (seconds), its text (lines by newline)."""

    start: float
    end: float
    text: str


def _seconds(stamp: str) -> float | None:
    match = _TIME.match(stamp.strip())
    if not match:
        return None
    hours, minutes, seconds, fraction = match.groups()
    return (int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
            + int(fraction.ljust(3, "0")) / 1000)  # fmt: skip


def _clean(text: str) -> str:
    plain = html.unescape(_TAG.sub("", text))
    kept = "".join(
        " " if ch == "\t" else ch
        for ch in plain
        if ch == "\n" or ch == "\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs")
    )
    return "\n".join(line.strip() for line in kept.split("\n") if line.strip())


def parse(text: str) -> list[Cue]:
    """The cues of a WebVTT or SRT file; InvalidInput when it is neither."""
    body = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    cues: list[Cue] = []
    for block in re.split(r"\n\s*\n", body):
        lines = block.strip("\n").split("\n")
        timing = next((i for i, line in enumerate(lines[:2]) if "-->" in line), None)
        if timing is None:
            continue  # the WEBVTT header, NOTE, STYLE, REGION blocks
        left, _, right = lines[timing].partition("-->")
        start, end = _seconds(left), _seconds(right.strip().split(" ")[0] if right.strip() else "")
        if start is None or end is None or end <= start:
            continue
        words = _clean("\n".join(lines[timing + 1 :]))
        if words:
            cues.append(Cue(start, end, words))
    if not cues:
        raise WorkerError(
            Reason.INVALID_INPUT, "the subtitles are not WebVTT or SRT (no cue with a timing)"
        )
    return cues


def in_clip(cues: list[Cue], start: float, end: float) -> list[Cue]:
    """The cues shown in [start, end), on the clip's timeline (0 = start)."""
    shown = [
        Cue(max(c.start, start) - start, min(c.end, end) - start, c.text)
        for c in cues
        if c.end > start and c.start < end
    ]
    if len(shown) > MAX_CUES:
        raise WorkerError(
            Reason.INVALID_INPUT, f"the subtitles have {len(shown)} cues in the clip; "
            f"at most {MAX_CUES} are drawn"
        )  # fmt: skip
    return shown


def fetch(url: str, proxy_url: str, timeout: float) -> list[Cue]:
    """GET a WebVTT/SRT file through the egress proxy and parse it."""
    what = "the subtitles"
    body = guarded_get(url, what, proxy_url, timeout, MAX_BYTES)
    if len(body) > MAX_BYTES:
        raise WorkerError(Reason.INVALID_INPUT, f"{what} are over {MAX_BYTES} bytes")
    return parse(body.decode("utf-8", errors="replace"))


def drawtext_filters(
    cues: list[Cue], width: int, height: int, work_dir: str, above: float = 0.0
) -> list[str]:
    """One drawtext per cue line; `above`: pixels kept free at the bottom (a caption)."""
    filters: list[str] = []
    size = max(10.0, min(width / 22, height / 16))
    for n, cue in enumerate(cues):
        font = fonts.pick(cue.text.replace("\n", ""))
        border = max(1, round(size * 0.08))
        room = width * (1 - 2 * overlay.SIDE) - 2 * border
        lines, _ = overlay.wrap(cue.text, font, size, room)
        lines = lines[-MAX_LINES:]
        pitch = size * overlay.LINE_SPACING
        descent = font.descender / font.units_per_em * size if font.units_per_em else 0
        last = height * (1 - overlay.MARGIN) - border - descent - above
        first = last - (len(lines) - 1) * pitch
        block = overlay.Block(font, round(size), border, tuple(lines))
        for index, line in enumerate(lines):
            if not line.strip():
                continue
            path = os.path.join(work_dir, f"subtitle-{n}-{index}.txt")
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(line)
            drawn = overlay.line_filter(block, path, first + index * pitch)
            filters.append(f"{drawn}:enable=between(t\\,{cue.start:.3f}\\,{cue.end - 0.0005:.4f})")
    return filters
