"""Issue 16's worker options without FFmpeg: parsing, crop geometry, caption layout."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from clip_worker import config, filters, fonts, loudness, options, overlay
from clip_worker.result import Reason, WorkerError

BASE = {
    "CLIP_SOURCE_URL": "https://example.test/v.mp4",
    "CLIP_START": "1",
    "CLIP_END": "3",
    "CLIP_S3_BUCKET": "clips",
    "CLIP_S3_KEY": "k.mp4",
}


def _cfg(**extra: str) -> config.Config:
    return config.load({**BASE, **extra})


def test_options_are_off_by_default() -> None:
    cfg = _cfg()
    assert (cfg.captions, cfg.crop, cfg.loudness, cfg.filtered) == (None, None, None, False)


def test_thumbnail_defaults_to_the_first_frame_beside_the_clip() -> None:
    thumb = _cfg(CLIP_THUMBNAIL_FORMAT="webp").thumbnail
    assert thumb == options.Thumbnail("webp", 0.0, "k.mp4.thumb.webp", None)
    assert thumb.content_type == "image/webp"


def test_options_parse() -> None:
    cfg = _cfg(CLIP_CAPTION_TOP="a\nb", CLIP_CAPTION_UPPERCASE="true", CLIP_CROP_ASPECT="1920:1080",
               CLIP_CROP_POSITION="0.25", CLIP_LOUDNESS_TARGET="-16")  # fmt: skip
    assert cfg.captions == options.Captions("a\nb", None, True)
    assert cfg.crop == options.Crop(16, 9, 0.25)
    assert cfg.loudness == options.Loudness(-16.0, -1.0)
    assert cfg.filtered


@pytest.mark.parametrize(
    ("extra", "text"),
    [
        ({"CLIP_CAPTION_TOP": "x" * 301}, "CLIP_CAPTION_TOP is 301 characters"),
        ({"CLIP_CAPTION_BOTTOM": "bell\x07"}, "control character U+0007"),
        ({"CLIP_CAPTION_TOP": "a", "CLIP_CAPTION_UPPERCASE": "maybe"}, "true or false"),
        ({"CLIP_CROP_ASPECT": "9x16"}, "W:H like 9:16"),
        ({"CLIP_CROP_ASPECT": "0:1"}, "W:H like 9:16"),
        ({"CLIP_CROP_ASPECT": "20:1"}, "wider than 10:1"),
        ({"CLIP_CROP_ASPECT": "1:1", "CLIP_CROP_POSITION": "1.5"}, "between 0 and 1"),
        ({"CLIP_CROP_POSITION": "0.5"}, "without CLIP_CROP_ASPECT"),
        ({"CLIP_LOUDNESS_TARGET": "0"}, "between -70 and -5"),
        ({"CLIP_LOUDNESS_TARGET": "loud"}, "must be a number"),
        ({"CLIP_OUTPUT_FORMAT": "mp3", "CLIP_CAPTION_TOP": "a"}, "need video"),
        ({"CLIP_OUTPUT_FORMAT": "gif", "CLIP_LOUDNESS_TARGET": "-14"}, "needs audio"),
        ({"CLIP_THUMBNAIL_FORMAT": "png"}, "jpeg, webp or gif"),
        ({"CLIP_THUMBNAIL_FORMAT": "jpeg", "CLIP_THUMBNAIL_SECONDS": "2"}, "format gif) only"),
        ({"CLIP_THUMBNAIL_FORMAT": "gif", "CLIP_THUMBNAIL_SECONDS": "30"}, "between 0.5 and 10"),
        ({"CLIP_WATERMARK_URL": "file:///etc/passwd"}, "CLIP_WATERMARK_URL must be an http(s)"),
        ({"CLIP_WATERMARK_POSITION": "top-left"}, "without CLIP_WATERMARK_URL"),
        (
            {"CLIP_WATERMARK_URL": "https://e.test/w.png", "CLIP_WATERMARK_POSITION": "centre"},
            "must be one of top-left",
        ),
        (
            {"CLIP_WATERMARK_URL": "https://e.test/w.png", "CLIP_WATERMARK_OPACITY": "2"},
            "between 0 and 1",
        ),
        (
            {"CLIP_WATERMARK_URL": "https://e.test/w.png", "CLIP_OUTPUT_FORMAT": "mp3"},
            "needs video",
        ),
        ({"CLIP_THUMBNAIL_AT": "1"}, "without CLIP_THUMBNAIL_FORMAT"),
        ({"CLIP_THUMBNAIL_FORMAT": "jpeg", "CLIP_THUMBNAIL_AT": "2"}, "inside the clip"),
        ({"CLIP_THUMBNAIL_FORMAT": "jpeg", "CLIP_OUTPUT_FORMAT": "mp3"}, "needs video"),
        (
            {"CLIP_THUMBNAIL_FORMAT": "jpeg", "CLIP_UPLOAD_URL": "https://s3.test/b/k?sig=1"},
            "CLIP_THUMBNAIL_URL is required",
        ),
        (
            {
                "CLIP_THUMBNAIL_FORMAT": "webp",
                "CLIP_UPLOAD_URL": "https://s3.test/b/k?sig=1",
                "CLIP_THUMBNAIL_URL": "ftp://s3.test/t",
            },
            "CLIP_THUMBNAIL_URL must be an http(s) URL",
        ),
    ],
)
def test_bad_options_are_invalid_input_naming_the_variable(
    extra: dict[str, str], text: str
) -> None:
    with pytest.raises(WorkerError) as info:
        _cfg(**extra)
    assert info.value.reason is Reason.INVALID_INPUT
    assert text in info.value.message


@pytest.mark.parametrize(
    ("aspect", "source", "box"),
    [
        ((9, 16), (640, 360), (198, 352)),
        ((9, 16), (1920, 1080), (594, 1056)),
        ((1, 1), (640, 360), (360, 360)),
        ((4, 5), (1280, 720), (576, 720)),
        ((16, 9), (360, 640), (352, 198)),  # a landscape crop of a portrait source
    ],
)
def test_crop_box_has_the_exact_aspect_and_even_sides(
    aspect: tuple[int, int], source: tuple[int, int], box: tuple[int, int]
) -> None:
    w, h, x, y = filters.crop_box(options.Crop(*aspect, 0.5), *source)
    assert (w, h) == box
    assert w * aspect[1] == h * aspect[0] and w % 2 == 0 and h % 2 == 0
    assert 0 <= x <= source[0] - w and 0 <= y <= source[1] - h


def test_crop_position_moves_the_box_horizontally() -> None:
    xs = [filters.crop_box(options.Crop(1, 1, p), 640, 360)[2] for p in (0.0, 0.5, 1.0)]
    assert xs == [0, 140, 280]


def test_crop_then_max_height_and_gif_width_keep_the_aspect() -> None:
    cfg = _cfg(CLIP_CROP_ASPECT="9:16", CLIP_MAX_HEIGHT="500")
    geo = filters.geometry(cfg, 1920, 1080)
    assert (geo.out_width, geo.out_height) == (270, 480)
    gif = replace(_cfg(CLIP_CROP_ASPECT="16:9"), output_format="gif")
    geo = filters.geometry(gif, 1920, 1080)
    assert (geo.out_width, geo.out_height) == (480, 270)


needs_font = pytest.mark.skipif(
    not os.path.exists(fonts.FONT_FILES[0]),
    reason="caption font missing: apt-get install fonts-dejavu-core fonts-droid-fallback",
)

SIZES = [(480, 270), (640, 360), (1920, 1080), (1080, 1920), (198, 352)]
TEXTS = [
    "WHEN THE BUILD PASSES",
    "supercalifragilisticexpialidocious " * 8,
    "x" * 300,  # one word: broken between characters
    "first line\nsecond line\n\nfourth",
    "日本語のミームのテキスト、折り返しのテスト",
]


@needs_font
@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("text", TEXTS, ids=["short", "long", "one-word", "newlines", "cjk"])
def test_caption_layout_fits_the_frame(size: tuple[int, int], text: str) -> None:
    width, height = size
    block = overlay.layout(text, width, height)
    room = width * (1 - 2 * overlay.SIDE)
    for line in block.lines:
        assert block.font.width(line, block.size) + 2 * block.border <= room + 1, line
    assert "".join(block.lines).replace(" ", "") == text.replace("\n", "").replace(" ", "")
    assert block.size >= 8


@needs_font
def test_short_caption_uses_big_type_and_newlines_start_lines() -> None:
    block = overlay.layout("TOP TEXT", 640, 360)
    assert block.lines == ("TOP TEXT",) and block.size == 45
    assert overlay.layout("a\nb", 640, 360).lines == ("a", "b")


@needs_font
def test_font_falls_back_for_cjk_and_keeps_dejavu_for_rtl() -> None:
    if len(fonts.available()) < 2:
        pytest.skip("CJK fallback font missing: apt-get install fonts-droid-fallback")
    assert "Droid" in fonts.pick("日本語").path
    assert "DejaVu" in fonts.pick("שלום עולם مرحبا Ça").path


@needs_font
def test_caption_lines_go_to_files_never_into_the_filter(tmp_path: object) -> None:
    work = str(tmp_path)
    hostile = "it's: a\\b %{pts} [x];,"
    chain = overlay.drawtext_filters(options.Captions(hostile, None), 640, 360, work)
    assert len(chain) == 1 and "%{pts}" not in chain[0] and "it's" not in chain[0]
    assert "expansion=none" in chain[0]
    with open(os.path.join(work, "caption-top-0.txt"), encoding="utf-8") as handle:
        assert handle.read() == hostile


def test_option_value_escapes_twice() -> None:
    assert overlay.option_value("/a b/c:d'e") == "/a\\\\\\ b/c\\\\\\:d\\\\\\'e"


def test_loudnorm_figures_and_layout_are_parsed() -> None:
    stderr = (
        "  Stream #0:1(und): Audio: aac (LC), 48000 Hz, 5.1(side), fltp (default)\n"
        "[Parsed_loudnorm_0 @ 0x1]\n{\n"
        '\t"input_i" : "-27.61",\n\t"input_tp" : "-9.02",\n\t"input_lra" : "0.60",\n'
        '\t"input_thresh" : "-37.61",\n\t"target_offset" : "0.25"\n}\n'
    )
    measured = loudness.parse_loudnorm(stderr)
    assert measured == loudness.Measured(-27.61, -9.02, 0.6, -37.61, 0.25, "5.1(side)")
    chain = loudness.audio_filter(options.Loudness(-14, -1), measured)
    assert "measured_I=-27.61" in chain and "linear=true" in chain
    assert chain.endswith("aformat=channel_layouts=5.1\\\\\\(side\\\\\\)")
    assert loudness.audio_filter(options.Loudness(), None) == "aresample=48000"


def test_watermark_option_and_its_overlay_graph() -> None:
    from clip_worker import watermark

    cfg = _cfg(CLIP_WATERMARK_URL="https://e.test/w.png", CLIP_WATERMARK_POSITION="top-left")
    mark = cfg.watermark
    assert mark == options.Watermark("https://e.test/w.png", "top-left", 0.8, 0.2)
    assert cfg.filtered
    graph = watermark.overlay_graph(mark, 640, "base", "1:v", "v")
    assert "scale=128:-2" in graph and "aa=0.8" in graph and "overlay=x=19:y=19" in graph
    corner = replace(mark, position="bottom-right")
    graph = watermark.overlay_graph(corner, 1080, "base", "1:v", "v")
    assert "x=main_w-overlay_w-32:y=main_h-overlay_h-32" in graph


@pytest.mark.parametrize(
    ("head", "kind"),
    [(b"\x89PNG\r\n\x1a\n....", "png_pipe"), (b"\xff\xd8\xff\xe0", "jpeg_pipe"),
     (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp_pipe"), (b"#EXTM3U\n", None),
     (b"<html>", None)],
)  # fmt: skip
def test_watermark_kind_comes_from_its_first_bytes(head: bytes, kind: str | None) -> None:
    from clip_worker import watermark

    found = watermark._kind(head)
    assert (found[0] if found else None) == kind


VTT = """\ufeffWEBVTT
Kind: captions

NOTE a comment --> not a cue

1
00:00:01.000 --> 00:00:01.600 align:start position:10%
<v Roger><i>Hello</i> &amp; there</v>

00:02.500 --> 00:03.000
two
lines\u0007

00:05.000 --> 00:04.000
backwards: dropped
"""

SRT = """1
00:00:01,000 --> 00:00:02,500
{\\an8}<b>top</b> 50%: a\\b %{pts}

2
01:00:00,000 --> 01:00:01,000
an hour in
"""


def test_webvtt_cues_are_parsed_without_markup() -> None:
    from clip_worker import subtitles

    cues = subtitles.parse(VTT)
    assert [(c.start, c.end, c.text) for c in cues] == [
        (1.0, 1.6, "Hello & there"), (2.5, 3.0, "two\nlines")]  # fmt: skip


def test_srt_cues_keep_percent_and_backslash_but_not_ass_tags() -> None:
    from clip_worker import subtitles

    cues = subtitles.parse(SRT)
    assert cues[0].text == "top 50%: a\\b %{pts}" and cues[1].start == 3600.0


def test_cues_are_cut_to_the_clip_and_shifted() -> None:
    from clip_worker import subtitles

    cues = subtitles.in_clip(subtitles.parse(VTT), 1.2, 2.8)
    assert [(round(c.start, 3), round(c.end, 3)) for c in cues] == [(0.0, 0.4), (1.3, 1.6)]


def test_a_file_without_cues_is_invalid_input() -> None:
    from clip_worker import subtitles

    with pytest.raises(WorkerError) as info:
        subtitles.parse("<html>not subtitles</html>")
    assert info.value.reason is Reason.INVALID_INPUT and "WebVTT or SRT" in info.value.message


@pytest.mark.parametrize(
    ("extra", "text"),
    [
        ({"CLIP_SUBTITLES_URL": "ftp://e.test/s.vtt"}, "must be an http(s) URL"),
        ({"CLIP_SUBTITLES_LANGUAGE": "english please"}, "language code like en"),
        ({"CLIP_SUBTITLES_URL": "https://e.test/s.vtt", "CLIP_SUBTITLES_LANGUAGE": "en"},
         "exclude each other"),
        ({"CLIP_SUBTITLES_LANGUAGE": "en", "CLIP_OUTPUT_FORMAT": "mp3"}, "need video"),
    ],
)  # fmt: skip
def test_bad_subtitle_options(extra: dict[str, str], text: str) -> None:
    with pytest.raises(WorkerError) as info:
        _cfg(**extra)
    assert text in info.value.message


def test_animated_preview_ends_with_the_clip() -> None:
    thumb = _cfg(CLIP_THUMBNAIL_FORMAT="gif", CLIP_THUMBNAIL_AT="1.5").thumbnail
    assert thumb and thumb.seconds == 0.5 and thumb.key == "k.mp4.thumb.gif"  # clip is 2 s
    assert _cfg(CLIP_THUMBNAIL_FORMAT="gif").thumbnail.seconds == 2.0  # type: ignore[union-attr]
