"""Meme captions: top and bottom text, white on a black outline, wrapped to the frame.

The text never enters a filter string: every line is written to a file of its own in the
scratch directory and drawn by `drawtext=textfile=...:expansion=none`, so quotes, colons,
backslashes and `%{...}` are glyphs like any other. The worker wraps and sizes the text
itself (drawtext does neither), with the font's own glyph widths (fonts.py): the size
starts at a tenth of the frame width (at most an eighth of its height) and shrinks until
each caption fits the width in at most a third of the height; below the smallest size
long words are broken between characters. Lines are centred, one drawtext each, on a
common baseline grid; explicit newlines in the text start new lines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from clip_worker import fonts
from clip_worker.options import Captions

LINE_SPACING = 1.15  # line pitch in ems
MARGIN = 0.04  # of the frame height, above the top and below the bottom caption
SIDE = 0.04  # of the frame width, kept free on each side
BLOCK_SHARE = 1 / 3  # of the frame height, at most, for each caption
OUTLINE = 0.08  # outline width in ems (classic meme: thick black border)


@dataclass(frozen=True)
class Block:
    """One caption laid out: font, pixel size, outline width and its lines."""

    font: fonts.Font
    size: int
    border: int
    lines: tuple[str, ...]

    @property
    def pitch(self) -> float:
        return self.size * LINE_SPACING

    @property
    def height(self) -> float:
        em = self.font.units_per_em
        extent = (self.font.ascender + self.font.descender) / em if em else 1.2
        return (len(self.lines) - 1) * self.pitch + extent * self.size + 2 * self.border


def _break_word(word: str, font: fonts.Font, size: float, room: float) -> list[str]:
    """A word wider than the line, split between characters."""
    pieces, current = [], ""
    for ch in word:
        if current and font.width(current + ch, size) > room:
            pieces.append(current)
            current = ch
        else:
            current += ch
    return [*pieces, current] if current else pieces


def _units(paragraph: str) -> list[str]:
    """Wrap units: words, and each wide (CJK) character on its own (no spaces there)."""
    units: list[str] = []
    for word in paragraph.split(" "):
        if not word:
            continue
        if any(0x2E80 <= ord(ch) <= 0x9FFF or 0xAC00 <= ord(ch) <= 0xD7AF for ch in word):
            units.extend(word)
            continue
        units.append(word)
    return units


def _joined(line: str, unit: str) -> str:
    if not line:
        return unit
    wide = 0x2E80 <= ord(unit[0]) <= 0x9FFF or 0x2E80 <= ord(line[-1]) <= 0x9FFF
    return line + unit if wide and len(unit) == 1 else f"{line} {unit}"


def wrap(text: str, font: fonts.Font, size: float, room: float) -> tuple[list[str], bool]:
    """Greedy wrap of `text` into lines no wider than `room`; False when a word had to be
    broken between characters to fit."""
    lines: list[str] = []
    whole = True
    for paragraph in text.split("\n"):
        line = ""
        for unit in _units(paragraph):
            candidate = _joined(line, unit)
            if font.width(candidate, size) <= room:
                line = candidate
                continue
            if line:
                lines.append(line)
            if font.width(unit, size) <= room:
                line = unit
                continue
            whole = False
            *full, line = _break_word(unit, font, size, room)
            lines.extend(full)
        if line or not lines or paragraph.strip() == "":
            lines.append(line)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines, whole


def layout(text: str, width: int, height: int) -> Block:
    """Size and wrap one caption for a width x height frame."""
    font = fonts.pick(text.replace("\n", ""))
    size = max(8.0, min(width / 10, height / 8))
    smallest = max(8.0, min(width, height) / 30)
    while True:
        border = max(1, round(size * OUTLINE))
        room = width * (1 - 2 * SIDE) - 2 * border
        lines, whole = wrap(text, font, size, room)
        block = Block(font, round(size), border, tuple(lines))
        fits = whole and block.height <= height * BLOCK_SHARE
        if fits or size <= smallest:
            return block
        size = max(smallest, size * 0.9)


def option_value(value: str) -> str:
    """Escape `value` for an FFmpeg filter option inside a filter graph description.

    Two levels of av_get_token (the graph, then the filter's options) each drop one
    backslash: every character that is not plainly safe is escaped at both levels.
    """
    safe = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-")
    once = "".join(ch if ch in safe else "\\" + ch for ch in value)
    return "".join(ch if ch in safe else "\\" + ch for ch in once)


def line_filter(block: Block, line_file: str, baseline: float) -> str:
    """One centred drawtext of the line in `line_file` with its baseline at `baseline`."""
    return (
        f"drawtext=fontfile={option_value(block.font.path)}"
        f":textfile={option_value(line_file)}:expansion=none"
        f":fontsize={block.size}:fontcolor=white:borderw={block.border}:bordercolor=black"
        f":x=(w-text_w)/2:y={baseline:.1f}-max_glyph_a"
    )


def drawtext_filters(captions: Captions, width: int, height: int, work_dir: str) -> list[str]:
    """One drawtext per caption line (files written under `work_dir`)."""
    filters: list[str] = []
    for where, text in (("top", captions.top), ("bottom", captions.bottom)):
        if not text:
            continue
        block = layout(text.upper() if captions.upper_case else text, width, height)
        font, size = block.font, block.size
        ascent = font.ascender / font.units_per_em * size if font.units_per_em else size
        descent = font.descender / font.units_per_em * size if font.units_per_em else 0
        if where == "top":
            first = height * MARGIN + block.border + ascent
        else:
            last = height * (1 - MARGIN) - block.border - descent
            first = last - (len(block.lines) - 1) * block.pitch
        for index, line in enumerate(block.lines):
            if not line.strip():
                continue
            path = os.path.join(work_dir, f"caption-{where}-{index}.txt")
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(line)
            filters.append(line_filter(block, path, first + index * block.pitch))
    return filters
