"""Subtitle burn-in on real decoded frames: a cue's text is on the frames inside it and on
no frame outside it (OCR), through the egress guard, with hostile text drawn literally; and
the animated preview beside the clip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration import test_media_options as base
from tests.integration.test_media_options import Sources, _fails, _frame, _make, _read
from tests.plugins.media import run_worker, worker_env

# The generated sources (with subs.vtt) and the OCR tool of the media-option tests.
sources = base.sources
ocr = base.ocr

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("fmt", ["mp4", "gif"])
def test_cues_show_inside_their_time_and_nowhere_else(
    sources: Sources, ocr: str, s3_server: Any, s3_bucket: str, tmp_path: Path, fmt: str
) -> None:
    run, clip = _make(sources, s3_server, s3_bucket, tmp_path, "marker.mp4", fmt,
                      CLIP_SUBTITLES_URL=sources.url("subs.vtt"))  # fmt: skip
    assert run.result["cutPath"] == "reencode"
    seen = {}
    for at in (0.1, 0.3, 0.8, 1.05, 1.25, 1.6, 1.9):  # clip time
        seen[at] = " ".join(
            _read(ocr, _frame(clip, tmp_path / f"f{at}.png", at), "bottom", "4").split()
        )
    assert "HELLO THERE" in seen[0.8] and "HELLO THERE" in seen[1.05], seen
    assert "SECOND 50%: %{pts}" in seen[1.6], seen
    for at in (0.1, 0.3, 1.25, 1.9):
        assert not seen[at].strip(), (at, seen)  # BEFORE and LATER are outside the clip


def test_subtitles_sit_above_a_bottom_caption(
    sources: Sources, ocr: str, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    _, clip = _make(sources, s3_server, s3_bucket, tmp_path, "marker.mp4", "mp4",
                    CLIP_SUBTITLES_URL=sources.url("subs.vtt"),
                    CLIP_CAPTION_BOTTOM="CAPTION BELOW")  # fmt: skip
    lines = [ln.strip() for ln in _read(ocr, _frame(clip, tmp_path / "f.png", 0.8), "bottom", "4")
             .splitlines() if ln.strip()]  # fmt: skip
    assert lines[-2:] == ["HELLO THERE", "CAPTION BELOW"], lines


def test_the_source_pages_own_subtitles_in_a_language(
    sources: Sources, ocr: str, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    """A page whose <video> has a <track srclang=en>: yt-dlp lists it, the worker uses it."""
    _, clip = _make(sources, s3_server, s3_bucket, tmp_path, "page.html", "mp4",
                    CLIP_SUBTITLES_LANGUAGE="en")  # fmt: skip
    inside = _read(ocr, _frame(clip, tmp_path / "in.png", 0.8), "bottom", "4")
    outside = _read(ocr, _frame(clip, tmp_path / "out.png", 0.2), "bottom", "4")
    assert "HELLO THERE" in inside and not outside.strip(), (inside, outside)


def test_subtitles_that_are_not_webvtt_or_srt_are_invalid_input(
    sources: Sources, tmp_path: Path
) -> None:
    env = worker_env(sources.url("marker.mp4"), 0.5, 1.5, "mp4",
                     CLIP_SUBTITLES_URL=sources.url("not-an-image.png"))  # fmt: skip
    run = run_worker(env, tmp_path)
    _fails(run, "InvalidInput", 2)
    assert "WebVTT or SRT" in run.result["message"]


def test_missing_source_subtitles_name_what_there_is(sources: Sources, tmp_path: Path) -> None:
    env = worker_env(sources.url("marker.mp4"), 0.5, 1.5, "mp4", CLIP_SUBTITLES_LANGUAGE="de")
    run = run_worker(env, tmp_path)
    _fails(run, "InvalidInput", 2)
    assert "no subtitles in 'de' (it has: none)" in run.result["message"]


def test_subtitle_url_goes_through_the_egress_guard(sources: Sources, tmp_path: Path) -> None:
    env = worker_env(sources.url("marker.mp4"), 0.5, 1.5, "mp4",
                     CLIP_SUBTITLES_URL="http://169.254.169.254/latest/subs.vtt")  # fmt: skip
    _fails(run_worker(env, tmp_path), "ForbiddenAddress", 2)


def test_animated_gif_preview_beside_the_clip(
    sources: Sources, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    """Issue 16's animated preview: 1 s from 0.5 s into the clip, 10 fps, 320 px wide."""
    from tests.plugins.media import decoded_frames, media_duration

    run, _ = _make(sources, s3_server, s3_bucket, tmp_path, "land.mp4", "mp4",
                   CLIP_THUMBNAIL_FORMAT="gif", CLIP_THUMBNAIL_AT="0.5",
                   CLIP_THUMBNAIL_SECONDS="1")  # fmt: skip
    thumb = run.result["thumbnail"]
    assert thumb["contentType"] == "image/gif" and thumb["durationSeconds"] == 1.0
    obj = s3_server.client().get_object(Bucket=s3_bucket, Key=thumb["key"])
    preview = tmp_path / "preview.gif"
    preview.write_bytes(obj["Body"].read())
    assert (thumb["width"], thumb["height"]) == (320, 180)
    assert 9 <= decoded_frames(preview) <= 11 and abs(media_duration(preview) - 1.0) <= 0.11


def test_cjk_and_rtl_captions_fall_back_to_fonts_that_have_their_glyphs(
    sources: Sources, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    """The CJK caption is drawn with Droid Sans Fallback (real glyphs), not as DejaVu's
    empty boxes: the worker's frame matches a local drawing with the font it picked and
    differs from one forced to DejaVu; the Hebrew/French caption uses DejaVu."""
    import subprocess

    from clip_worker import fonts, options, overlay
    from tests.plugins.media import psnr

    if len(fonts.available()) < 2:
        pytest.skip("CJK font missing: apt-get install fonts-droid-fallback (make deps)")
    top, bottom = "日本語のミーム", "שלום Ça déjà"
    _, clip = _make(sources, s3_server, s3_bucket, tmp_path, "marker.mp4", "mp4",
                    CLIP_CAPTION_TOP=top, CLIP_CAPTION_BOTTOM=bottom)  # fmt: skip
    made = _frame(clip, tmp_path / "made.png", 0.5)
    source = _frame(sources.root / "marker.mp4", tmp_path / "source.png", 1.0)

    def draw(out: Path, only: str | None = None) -> Path:
        work = tmp_path / out.stem
        work.mkdir()
        chain = overlay.drawtext_filters(options.Captions(top, bottom), 640, 360, str(work))
        if only:  # every caption in this one font (DejaVu has no CJK: empty boxes)
            chain = [f.replace(fonts.FONT_FILES[1], only) for f in chain]
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source),
                        "-vf", ",".join(chain), str(out)], check=True, timeout=60)  # fmt: skip
        return out

    picked = draw(tmp_path / "picked.png")
    boxes = draw(tmp_path / "boxes.png", fonts.FONT_FILES[0])
    assert fonts.pick(top).path == fonts.FONT_FILES[1]
    assert fonts.pick(bottom).path == fonts.FONT_FILES[0]
    assert psnr(picked, made) > psnr(boxes, made) + 3, (psnr(picked, made), psnr(boxes, made))
