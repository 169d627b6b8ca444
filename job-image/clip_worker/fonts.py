"""The caption fonts and their glyph widths, read from the TrueType files themselves.

drawtext neither wraps nor falls back to another font, so the worker does both: it
measures each line with the font's own advance widths (`cmap` + `hmtx` tables) and picks,
per caption, the first font that has a glyph for every character (DejaVu Sans Bold for
Latin, Greek, Cyrillic, Hebrew and Arabic; Droid Sans Fallback for CJK). No network, no
fontconfig: the files come from Debian packages in the image (job-image/README.md).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from functools import cache

# Debian: fonts-dejavu-core (Bitstream Vera / DejaVu licence), fonts-droid-fallback (Apache-2.0).
FONT_FILES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
)
# Characters every line may hold without counting as missing (drawn as nothing).
_IGNORED = {0x20, 0xA0, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0xFEFF}


class FontError(Exception):
    """No usable caption font in the image."""


@dataclass(frozen=True)
class Font:
    """One TrueType font: where it is, its em size and advance width per code point."""

    path: str
    units_per_em: int
    advances: dict[int, int]  # code point -> advance width in font units
    default_advance: int  # the .notdef glyph's advance (a missing character's box)
    ascender: int = 0  # above the baseline, font units (hhea)
    descender: int = 0  # below the baseline, font units, positive

    def covers(self, text: str) -> bool:
        """Whether every character of `text` has a glyph in this font."""
        return all(ord(ch) in self.advances or ord(ch) in _IGNORED for ch in text)

    def width(self, text: str, size: float) -> float:
        """Rendered width in pixels of `text` at `size` pixels per em (no kerning)."""
        units = sum(self.advances.get(ord(ch), self.default_advance) for ch in text)
        return units * size / self.units_per_em


def _tables(data: bytes) -> dict[bytes, tuple[int, int]]:
    count = struct.unpack_from(">H", data, 4)[0]
    tables = {}
    for i in range(count):
        tag, _, offset, length = struct.unpack_from(">4sIII", data, 12 + 16 * i)
        tables[tag] = (offset, length)
    return tables


def _cmap(data: bytes, offset: int) -> dict[int, int]:
    """Code point -> glyph id from the best Unicode subtable (format 12, else format 4)."""
    count = struct.unpack_from(">H", data, offset + 2)[0]
    best: tuple[int, int] | None = None
    for i in range(count):
        platform, encoding, sub = struct.unpack_from(">HHI", data, offset + 4 + 8 * i)
        fmt = struct.unpack_from(">H", data, offset + sub)[0]
        if (platform == 3 and encoding in (1, 10)) or platform == 0:
            if fmt == 12 and (best is None or best[0] != 12):
                best = (12, offset + sub)
            elif fmt == 4 and best is None:
                best = (4, offset + sub)
    if best is None:
        raise FontError("the font has no Unicode cmap")
    fmt, at = best
    mapping: dict[int, int] = {}
    if fmt == 12:
        groups = struct.unpack_from(">I", data, at + 12)[0]
        for g in range(groups):
            first, last, glyph = struct.unpack_from(">III", data, at + 16 + 12 * g)
            for code in range(first, last + 1):
                mapping[code] = glyph + code - first
        return mapping
    segs = struct.unpack_from(">H", data, at + 6)[0] // 2
    ends = struct.unpack_from(f">{segs}H", data, at + 14)
    starts = struct.unpack_from(f">{segs}H", data, at + 16 + 2 * segs)
    deltas = struct.unpack_from(f">{segs}h", data, at + 16 + 4 * segs)
    range_at = at + 16 + 6 * segs
    offsets = struct.unpack_from(f">{segs}H", data, range_at)
    for s in range(segs):
        for code in range(starts[s], ends[s] + 1):
            if code == 0xFFFF:
                continue
            if offsets[s] == 0:
                glyph = (code + deltas[s]) & 0xFFFF
            else:
                where = range_at + 2 * s + offsets[s] + 2 * (code - starts[s])
                glyph = struct.unpack_from(">H", data, where)[0]
                glyph = (glyph + deltas[s]) & 0xFFFF if glyph else 0
            if glyph:
                mapping[code] = glyph
    return mapping


@cache
def load(path: str) -> Font:
    """Parse the tables of a TrueType file (cached: the fonts do not change)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        tables = _tables(data)
        units = struct.unpack_from(">H", data, tables[b"head"][0] + 18)[0]
        hhea = tables[b"hhea"][0]
        ascender, descender = struct.unpack_from(">hh", data, hhea + 4)
        metrics = struct.unpack_from(">H", data, hhea + 34)[0]
        hmtx = tables[b"hmtx"][0]
        widths = struct.unpack_from(f">{2 * metrics}H", data, hmtx)[0::2]
        glyphs = _cmap(data, tables[b"cmap"][0])
    except (OSError, KeyError, struct.error) as exc:
        raise FontError(f"cannot read the caption font {path}: {exc}") from None
    last = widths[-1]
    advances = {code: widths[g] if g < len(widths) else last for code, g in glyphs.items()}
    return Font(path, units, advances, widths[0], ascender, abs(descender))


def available() -> list[Font]:
    """The caption fonts present in this image, in order of preference."""
    fonts = [load(path) for path in FONT_FILES if os.path.exists(path)]
    if not fonts:
        raise FontError(
            f"no caption font installed (the image needs fonts-dejavu-core: {FONT_FILES[0]})"
        )
    return fonts


def pick(text: str) -> Font:
    """The first font with every character of `text`; the main font when none has all
    (missing characters are then drawn as its empty box, the rest stays readable)."""
    fonts = available()
    for font in fonts:
        if font.covers(text):
            return font
    # The font that covers most of the text beats a box for every character.
    return max(fonts, key=lambda f: sum(ord(ch) in f.advances for ch in text))
