"""Issue 16's spec fields in the operator: the model re-checks what admission checks, and
status.output.loudness carries the worker's measurement."""

from __future__ import annotations

from typing import Any

import pytest

from clip_operator.models import InvalidSpec, parse_spec
from clip_operator.status import output_from_result

BASE: dict[str, Any] = {"source": {"url": "https://example.test/v"}, "start": "10", "end": "20"}


def test_media_options_parse_with_defaults() -> None:
    spec = parse_spec({**BASE, "captions": {"top": "a\nb"},
                       "output": {"crop": {"aspect": "9:16"}, "loudness": {}}})  # fmt: skip
    assert spec.captions and spec.captions.top == "a\nb" and not spec.captions.upper_case
    assert spec.output.crop and spec.output.crop.position == 0.5
    assert spec.output.loudness and spec.output.loudness.target_lufs == -14.0


@pytest.mark.parametrize(
    ("extra", "text"),
    [
        ({"captions": {"top": "x" * 301}}, "spec.captions.top"),
        ({"captions": {"top": "a\x1bb"}}, "control characters"),
        ({"captions": {}}, "needs top or bottom text"),
        ({"captions": {"top": "a"}, "output": {"format": "mp3"}}, "captions need video"),
        ({"output": {"crop": {"aspect": "30:1"}}}, "between 1:10 and 10:1"),
        ({"output": {"crop": {"aspect": "9/16"}}}, "spec.output.crop.aspect"),
        ({"output": {"format": "mp3", "crop": {"aspect": "1:1"}}}, "crop needs video"),
        ({"output": {"format": "gif", "loudness": {}}}, "loudness needs audio"),
        ({"output": {"loudness": {"targetLufs": -80}}}, "spec.output.loudness.targetLufs"),
        ({"thumbnail": {"format": "png"}}, "spec.thumbnail.format"),
        ({"thumbnail": {"durationSeconds": 2}}, "durationSeconds is for the animated preview"),
        ({"subtitles": {}}, "exactly one of url and language"),
        ({"subtitles": {"url": "ftp://e.test/s.srt"}}, "subtitles.url must be an http(s)"),
        ({"subtitles": {"language": "en"}, "output": {"format": "mp3"}}, "subtitles need video"),
        ({"watermark": {"url": "ftp://e.test/w.png"}}, "watermark.url must be an http(s)"),
        (
            {"watermark": {"url": "https://e.test/w.png"}, "output": {"format": "mp3"}},
            "watermark needs video",
        ),
        ({"watermark": {"url": "https://e.test/w.png", "opacity": 2}}, "spec.watermark.opacity"),
        ({"thumbnail": {"atSeconds": 10}}, "must be inside the clip, which lasts 10 s"),
        ({"thumbnail": {}, "output": {"format": "mp3"}}, "thumbnail needs video"),
    ],
)
def test_bad_media_options_are_invalid_spec(extra: dict[str, Any], text: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_spec({**BASE, **extra})
    assert text in str(info.value)


def test_loudness_figures_reach_status_output() -> None:
    result = {"bucket": "b", "key": "k", "cutPath": "smart",
              "loudness": {"targetLufs": -14.0, "integratedLufs": -14.04, "rangeLu": 0.4,
                           "truePeakDbtp": -3.2, "bogus": "x"}}  # fmt: skip
    out = output_from_result(result, "b", "k")
    assert out["loudness"] == {"targetLufs": -14.0, "integratedLufs": -14.0, "rangeLu": 0.4,
                               "truePeakDbtp": -3.2}  # fmt: skip
    assert "loudness" not in output_from_result({"loudness": "loud"}, "b", "k")


def test_thumbnail_reaches_status_output_with_its_size() -> None:
    thumb = {"key": "k.thumb.jpg", "contentType": "image/jpeg", "width": 640, "height": 360,
             "sizeBytes": 1234, "atSeconds": 0.0, "url": "https://leak.test/?sig"}  # fmt: skip
    out = output_from_result({"thumbnail": thumb}, "b", "k")
    assert out["thumbnail"] == {k: v for k, v in thumb.items() if k != "url"}
    assert "thumbnail" not in output_from_result({"thumbnail": {"width": 1}}, "b", "k")


def test_thumbnail_key_sits_beside_the_clip_and_is_deleted_with_it() -> None:
    from clip_operator.builders import thumbnail_key

    spec = parse_spec({**BASE, "thumbnail": {"format": "webp"}})
    assert thumbnail_key("ns/a-1.mp4", spec) == "ns/a-1.mp4.thumb.webp"
    assert thumbnail_key("ns/a-1.mp4", parse_spec(BASE)) is None


def test_thumbnail_url_is_placed_beside_the_clip_url_and_refreshed_with_it() -> None:
    from datetime import UTC, datetime

    from clip_operator.decide import decide
    from clip_operator.plan import Facts, Settings

    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    body = {
        "metadata": {"name": "a", "namespace": "ns", "uid": "u1", "generation": 1,
                     "creationTimestamp": "2026-11-30T11:59:00Z"},
        "spec": {**BASE, "thumbnail": {}},
        "status": {"phase": "Succeeded", "output": {"bucket": "b", "key": "k"}, "url": "u",
                   "urlExpiresAt": "2026-11-30T12:05:00Z", "urlIssuedAt": "2026-11-30T11:00:00Z",
                   "conditions": [{"type": "Ready", "status": "True",
                                   "lastTransitionTime": "2026-11-30T11:00:00Z"}]},
    }  # fmt: skip
    url = ("https://s3/k?sig", "2026-11-30T13:00:00Z", "2026-11-30T12:00:00Z")
    facts = Facts(url=url, thumbnail_url="https://s3/k.thumb.jpg?sig")
    plan = decide(body, None, None, facts, now, Settings(default_bucket="b"))
    assert plan.status and plan.status["url"] == url[0]
    assert plan.status["thumbnailUrl"] == "https://s3/k.thumb.jpg?sig"
    secret = decide(body, None, None, facts, now, Settings(default_bucket="b", url_policy="Secret"))
    assert secret.status and "thumbnailUrl" not in secret.status
