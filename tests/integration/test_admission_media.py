"""The API server rejects bad media options (issue 16) at `kubectl apply`, naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.clipjobs import create, manifest

pytestmark = pytest.mark.integration

INVALID = [
    ("caption-too-long", {"captions": {"top": "x" * 301}}, "spec.captions.top",
     "may not be more than 300"),
    ("caption-5000", {"captions": {"bottom": "ha" * 2500}}, "spec.captions.bottom",
     "may not be more than 300"),
    ("caption-control", {"captions": {"top": "bell\x07"}}, "spec.captions.top",
     "control characters other than newlines"),
    ("caption-tab", {"captions": {"bottom": "a\tb"}}, "spec.captions.bottom",
     "control characters other than newlines"),
    ("caption-empty", {"captions": {"upperCase": True}}, "spec.captions",
     "needs top or bottom text"),
    ("caption-mp3", {"captions": {"top": "a"}, "output": {"format": "mp3"}}, "spec.captions",
     "need video"),
    ("crop-no-aspect", {"output": {"crop": {"position": 0.5}}}, "spec.output.crop.aspect",
     "Required value"),
    ("crop-bad-aspect", {"output": {"crop": {"aspect": "9x16"}}}, "spec.output.crop.aspect",
     "should match"),
    ("crop-too-wide", {"output": {"crop": {"aspect": "11:1"}}}, "spec.output.crop.aspect",
     "between 1:10 and 10:1"),
    ("crop-position", {"output": {"crop": {"aspect": "1:1", "position": 1.5}}},
     "spec.output.crop.position", "less than or equal to 1"),
    ("crop-mp3", {"output": {"format": "mp3", "crop": {"aspect": "1:1"}}}, "spec.output.crop",
     "needs video"),
    ("loudness-high", {"output": {"loudness": {"targetLufs": 0}}},
     "spec.output.loudness.targetLufs", "less than or equal to -5"),
    ("loudness-peak", {"output": {"loudness": {"truePeakDbtp": 3}}},
     "spec.output.loudness.truePeakDbtp", "less than or equal to 0"),
    ("loudness-gif", {"output": {"format": "gif", "loudness": {}}}, "spec.output.loudness",
     "needs audio"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "spec", "field", "text"), INVALID, ids=[c[0] for c in INVALID])
def test_bad_media_options_are_rejected_naming_the_field(
    kube: Any, namespace: str, name: str, spec: dict[str, Any], field: str, text: str
) -> None:
    with pytest.raises(ApiException) as info:
        create(kube, namespace, manifest(name, **spec))
    assert info.value.status in (400, 422), info.value.body
    assert field in info.value.body and text in info.value.body, info.value.body


def test_hostile_but_printable_caption_is_accepted_as_written(kube: Any, namespace: str) -> None:
    text = "it's 50%: a\\b %{pts} [x];\nnext line ünïcødé 日本語 שלום"
    output = {"crop": {"aspect": "9:16"}, "loudness": {}}
    created = create(kube, namespace, manifest("hostile", captions={"top": text}, output=output))
    assert created["spec"]["captions"]["top"] == text
    assert created["spec"]["captions"]["upperCase"] is False
    assert created["spec"]["output"]["crop"]["position"] == 0.5
    assert created["spec"]["output"]["loudness"] == {"targetLufs": -14, "truePeakDbtp": -1}


def test_explain_covers_the_media_options(kube: Any) -> None:
    for path in ("clipjob.spec.captions.top", "clipjob.spec.output.crop.aspect",
                 "clipjob.spec.output.loudness.targetLufs", "clipjob.spec.thumbnail.format",
                 "clipjob.spec.watermark.opacity", "clipjob.spec.subtitles.language",
                 "clipjob.status.thumbnailUrl", "clipjob.status.output.loudness"):  # fmt: skip
        out = kube.run_kubectl("explain", path)
        assert out.returncode == 0 and "DESCRIPTION" in out.stdout.upper(), out.stderr


THUMBNAIL_INVALID = [
    ("mark-scheme", {"watermark": {"url": "file:///etc/passwd"}}, "spec.watermark.url",
     "http:// or https://"),
    ("mark-no-url", {"watermark": {"opacity": 0.5}}, "spec.watermark.url", "Required value"),
    ("mark-corner", {"watermark": {"url": "https://e.test/w.png", "position": "centre"}},
     "spec.watermark.position", "Unsupported value"),
    ("mark-opacity", {"watermark": {"url": "https://e.test/w.png", "opacity": 1.5}},
     "spec.watermark.opacity", "less than or equal to 1"),
    ("mark-width", {"watermark": {"url": "https://e.test/w.png", "width": 0}},
     "spec.watermark.width", "at least 0.02"),
    ("mark-mp3", {"watermark": {"url": "https://e.test/w.png"}, "output": {"format": "mp3"}},
     "spec.watermark", "needs video"),
    ("subs-both", {"subtitles": {"url": "https://e.test/s.vtt", "language": "en"}},
     "spec.subtitles", "exactly one of url and language"),
    ("subs-none", {"subtitles": {}}, "spec.subtitles", "exactly one of url and language"),
    ("subs-scheme", {"subtitles": {"url": "file:///etc/passwd"}}, "spec.subtitles.url",
     "http:// or https://"),
    ("subs-language", {"subtitles": {"language": "english please"}},
     "spec.subtitles.language", "should match"),
    ("subs-mp3", {"subtitles": {"language": "en"}, "output": {"format": "mp3"}},
     "spec.subtitles", "need video"),
    ("thumb-format", {"thumbnail": {"format": "png"}}, "spec.thumbnail.format",
     "Unsupported value"),
    ("thumb-negative", {"thumbnail": {"atSeconds": -1}}, "spec.thumbnail.atSeconds",
     "greater than or equal to 0"),
    ("thumb-after-end", {"start": "1:00", "end": "1:10", "thumbnail": {"atSeconds": 10}},
     "spec.thumbnail.atSeconds", "must be inside the clip"),
    ("thumb-mp3", {"thumbnail": {}, "output": {"format": "mp3"}}, "spec.thumbnail",
     "needs video"),
    ("preview-jpeg", {"thumbnail": {"format": "jpeg", "durationSeconds": 2}},
     "spec.thumbnail.durationSeconds", "animated preview (format gif) only"),
    ("preview-zero", {"thumbnail": {"format": "gif", "durationSeconds": 0}},
     "spec.thumbnail.durationSeconds", "at least 0.5"),
    ("preview-long", {"thumbnail": {"format": "gif", "durationSeconds": 11}},
     "spec.thumbnail.durationSeconds", "less than or equal to 10"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "spec", "field", "text"), THUMBNAIL_INVALID, ids=[c[0] for c in THUMBNAIL_INVALID]
)
def test_bad_thumbnail_or_watermark_is_rejected_naming_the_field(
    kube: Any, namespace: str, name: str, spec: dict[str, Any], field: str, text: str
) -> None:
    with pytest.raises(ApiException) as info:
        create(kube, namespace, manifest(name, **spec))
    assert field in info.value.body and text in info.value.body, info.value.body


def test_thumbnail_defaults_and_an_in_range_time_are_accepted(kube: Any, namespace: str) -> None:
    created = create(kube, namespace, manifest("thumb", thumbnail={}))
    assert created["spec"]["thumbnail"] == {"format": "jpeg", "atSeconds": 0}
    create(kube, namespace, manifest("thumb-late", start="1:00", end="1:10",
                                     thumbnail={"format": "webp", "atSeconds": 9.96}))  # fmt: skip
    create(kube, namespace, manifest("preview", thumbnail={"format": "gif", "durationSeconds": 2}))
