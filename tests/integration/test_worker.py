"""The worker as the Job runs it: a subprocess with CLIP_* env vars, real FFmpeg and yt-dlp,
the range-capable media server, and a real S3 server (versitygw)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clip_worker.netguard import REFUSED
from tests.mediaserver import MediaHTTPServer
from tests.plugins.media import (
    MediaSet,
    WorkerRun,
    decoded_frames,
    extract_frame,
    ffprobe_json,
    first_frame,
    last_frame,
    media_duration,
    psnr,
    run_worker,
    s3_target,
    worker_env,
)

pytestmark = pytest.mark.integration

START = 123.4  # a frame time at 25 fps (frame 3085), inside a GOP (keyframes every 2 s)
LENGTH = 6.0
FPS = 25
# First-frame match: the same frame re-encoded scores well above this; the frames next to
# it (the counter and the moving pattern differ) score well below (checked in the test).
PSNR_MIN_DB = 30.0

CONTENT_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "gif": "image/gif", "mp3": "audio/mpeg"}
CODECS = {"mp4": "h264", "webm": "vp9", "gif": "gif", "mp3": "mp3"}


def _env(
    server: MediaHTTPServer, path: str, start: float, end: float, **extra: str
) -> dict[str, str]:
    return worker_env(f"{server.url}/{path}", start, end, **extra)


_s3_env = s3_target


def _download(s3_server: Any, bucket: str, key: str, to: Path) -> dict[str, Any]:
    client = s3_server.client()
    obj = client.get_object(Bucket=bucket, Key=key)
    to.write_bytes(obj["Body"].read())
    return dict(obj)


def _assert_ok(run: WorkerRun) -> None:
    assert run.returncode == 0, f"worker failed: {run.result} {run.stderr[-2000:]}"
    assert "Traceback" not in run.stderr


def _decodes_cleanly(path: Path) -> None:
    import subprocess

    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr[-1000:]


@pytest.mark.parametrize("mode", ["fast", "accurate"])
@pytest.mark.parametrize("fmt", ["mp4", "webm", "gif", "mp3"])
def test_format_and_mode_give_playable_clip_of_right_length(
    fmt: str,
    mode: str,
    media: MediaSet,
    media_server: MediaHTTPServer,
    s3_server: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    key = f"clips/test.{fmt}"
    env = _env(
        media_server,
        media.faststart,
        START,
        START + LENGTH,
        CLIP_OUTPUT_FORMAT=fmt,
        CLIP_MODE=mode,
        CLIP_OUTPUT_FILENAME="Chorus \u2013 take 1",
        **_s3_env(s3_server, s3_bucket, key),
    )
    run = run_worker(env, tmp_path)
    _assert_ok(run)
    clip = tmp_path / f"out.{fmt}"
    obj = _download(s3_server, s3_bucket, key, clip)
    assert obj["ContentType"] == CONTENT_TYPES[fmt]
    assert 'filename="Chorus take 1.' in obj["ContentDisposition"]
    assert "filename*=UTF-8''Chorus%20%E2%80%93%20take%201." in obj["ContentDisposition"]
    r = run.result
    assert r["bucket"] == s3_bucket and r["key"] == key
    assert r["sizeBytes"] == clip.stat().st_size == obj["ContentLength"]
    assert r["contentType"] == CONTENT_TYPES[fmt]
    assert r["bytesFetched"] > 0
    assert set(r["timings"]) == {
        "resolveSeconds",
        "downloadSeconds",
        "encodeSeconds",
        "uploadSeconds",
        "totalSeconds",
    }
    streams = ffprobe_json(clip, "-show_entries", "stream=codec_name,codec_type")["streams"]
    assert streams[0]["codec_name"] == CODECS[fmt]
    _decodes_cleanly(clip)
    duration = media_duration(clip)
    if fmt == "mp3":
        assert "width" not in r
    else:
        assert (r["width"], r["height"]) == ((480, 270) if fmt == "gif" else (640, 360))
    if mode == "fast" and fmt in ("mp4",):
        # Stream copy: keyframe-aligned, MP4 hides the lead-in with an edit list.
        assert r["cutPath"] == "copy"
        assert LENGTH - 0.05 <= duration <= LENGTH + 2.05
    else:
        # Formats the source codecs cannot be copied into are encoded, exactly.
        assert r["cutPath"] in ("smart", "reencode")
        tolerance = {"gif": 1 / 15 + 0.01, "mp3": 0.06}.get(fmt, 1 / FPS + 0.001)
        assert abs(duration - LENGTH) <= tolerance, duration
    if mode == "accurate" and fmt == "mp4":
        assert r["cutPath"] == "smart"


def _match_scores(source: Path, index: int, image: Path, tmp: Path) -> dict[int, float]:
    """PSNR of `image` against source frames index-1, index, index+1."""
    scores = {}
    for offset in (-1, 0, 1):
        reference = tmp / f"src{index + offset}.png"
        extract_frame(source, index + offset, reference)
        scores[offset] = psnr(reference, image)
    return scores


@pytest.mark.parametrize(
    ("source", "start", "fmt", "cut_path"),
    [
        ("faststart", START, "mp4", "smart"),
        ("moov_end", START, "mp4", "smart"),
        ("hls", START, "mp4", "smart"),
        ("bframes", 23.4, "mp4", "smart"),
        ("faststart", START, "webm", "reencode"),
    ],
)
def test_accurate_first_and_last_frames_are_the_requested_ones(
    source: str,
    start: float,
    fmt: str,
    cut_path: str,
    media: MediaSet,
    media_server: MediaHTTPServer,
    s3_server: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    key = f"accurate.{fmt}"
    env = _env(
        media_server,
        getattr(media, source),
        start,
        start + LENGTH,
        CLIP_OUTPUT_FORMAT=fmt,
        **_s3_env(s3_server, s3_bucket, key),
    )
    run = run_worker(env, tmp_path)
    _assert_ok(run)
    assert run.result["cutPath"] == cut_path
    clip = tmp_path / f"clip.{fmt}"
    _download(s3_server, s3_bucket, key, clip)
    assert decoded_frames(clip) == round(LENGTH * FPS)
    reference = media.path(media.bframes if source == "bframes" else media.faststart)
    first_frame(clip, tmp_path / "first.png")
    last_frame(clip, tmp_path / "last.png")
    first = _match_scores(reference, round(start * FPS), tmp_path / "first.png", tmp_path)
    last = _match_scores(
        reference, round((start + LENGTH) * FPS) - 1, tmp_path / "last.png", tmp_path
    )
    print(f"{source}/{fmt} PSNR vs source frames (-1, 0, +1): first {first}, last {last}")
    for scores in (first, last):
        assert scores[0] >= PSNR_MIN_DB, scores
        assert scores[-1] < PSNR_MIN_DB and scores[1] < PSNR_MIN_DB, scores


def test_video_without_audio_and_audio_only(
    media: MediaSet,
    media_server: MediaHTTPServer,
    s3_server: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    video = run_worker(
        _env(media_server, media.video_only, 30, 34, **_s3_env(s3_server, s3_bucket, "v.mp4")),
        tmp_path / "v",
    )
    _assert_ok(video)
    _download(s3_server, s3_bucket, "v.mp4", tmp_path / "v.mp4")
    kinds = ffprobe_json(tmp_path / "v.mp4", "-show_entries", "stream=codec_type")["streams"]
    assert [s["codec_type"] for s in kinds] == ["video"]
    assert decoded_frames(tmp_path / "v.mp4") == 4 * FPS
    audio = run_worker(
        _env(
            media_server,
            media.audio_only,
            30,
            34,
            CLIP_OUTPUT_FORMAT="mp3",
            **_s3_env(s3_server, s3_bucket, "a.mp3"),
        ),
        tmp_path / "a",
    )
    _assert_ok(audio)
    _download(s3_server, s3_bucket, "a.mp3", tmp_path / "a.mp3")
    assert abs(media_duration(tmp_path / "a.mp3") - 4) <= 0.06
    assert "width" not in audio.result


def _fail(run: WorkerRun, code: int, reason: str) -> None:
    assert run.returncode == code, (run.returncode, run.result, run.stderr[-1500:])
    assert run.result.get("reason") == reason, run.result
    assert run.result.get("message")
    assert "Traceback" not in run.stderr
    assert reason in run.stderr  # a concise log line says what happened


@pytest.mark.parametrize(
    ("path", "code", "reason"),
    [
        ("_status/404", 3, "SourceNotFound"),
        ("_status/410", 3, "SourceNotFound"),
        ("_status/403", 3, "SourceForbidden"),
        ("_page.html", 2, "UnsupportedSource"),
        ("garbage.mp4", 2, "UnsupportedSource"),
    ],
)
def test_bad_sources(
    path: str, code: int, reason: str, media_server: MediaHTTPServer, tmp_path: Path
) -> None:
    _fail(run_worker(_env(media_server, path, 10, 15), tmp_path), code, reason)


def test_start_beyond_end(media: MediaSet, media_server: MediaHTTPServer, tmp_path: Path) -> None:
    run = run_worker(_env(media_server, media.faststart, 400, 405), tmp_path)
    _fail(run, 2, "StartBeyondEnd")
    assert "360" in run.result["message"]


def test_private_address_refused_without_allow_list(
    media: MediaSet, media_server: MediaHTTPServer, tmp_path: Path
) -> None:
    before = media_server.stats.requests(f"/{media.faststart}")
    env = _env(media_server, media.faststart, 10, 15, CLIP_ALLOW_PRIVATE_NETWORKS="")
    run = run_worker(env, tmp_path)
    _fail(run, 2, "ForbiddenAddress")
    assert run.result["message"] == REFUSED  # one message: no map of addresses for tenants
    # Refused before connecting: the server never saw a request.
    assert media_server.stats.requests(f"/{media.faststart}") == before


@pytest.mark.parametrize(
    "target", ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.2:{port}/{file}"]
)
def test_redirect_to_forbidden_address_refused(
    target: str, media: MediaSet, media_server: MediaHTTPServer, tmp_path: Path
) -> None:
    port = media_server.server_address[1]
    to = target.format(port=port, file=media.faststart)
    env = _env(
        media_server, f"_redirect?to={to}", 10, 15, CLIP_ALLOW_PRIVATE_NETWORKS="127.0.0.1/32"
    )
    run = run_worker(env, tmp_path)
    _fail(run, 2, "ForbiddenAddress")
    assert run.result["message"] == REFUSED


def test_file_scheme_refused(media: MediaSet, tmp_path: Path) -> None:
    env = {
        "CLIP_SOURCE_URL": f"file://{media.path(media.faststart)}",
        "CLIP_START": "1",
        "CLIP_END": "2",
        "CLIP_S3_BUCKET": "b",
        "CLIP_S3_KEY": "k",
    }
    run = run_worker(env, tmp_path)
    _fail(run, 2, "InvalidInput")
    assert "http(s)" in run.result["message"]


def test_clip_too_long(media: MediaSet, media_server: MediaHTTPServer, tmp_path: Path) -> None:
    before = media_server.stats.requests()
    env = _env(media_server, media.faststart, 10, 20, CLIP_MAX_CLIP_SECONDS="5")
    _fail(run_worker(env, tmp_path), 2, "ClipTooLong")
    assert media_server.stats.requests() == before  # refused before any download


def test_output_too_large(media: MediaSet, media_server: MediaHTTPServer, tmp_path: Path) -> None:
    env = _env(media_server, media.faststart, 10, 14, CLIP_MAX_OUTPUT_BYTES="20000")
    _fail(run_worker(env, tmp_path), 2, "OutputTooLarge")


def test_stalled_source_times_out(media_server: MediaHTTPServer, tmp_path: Path) -> None:
    env = _env(media_server, "_stall?seconds=40", 10, 15, CLIP_NETWORK_TIMEOUT_SECONDS="2")
    run = run_worker(env, tmp_path, timeout=120)
    assert run.returncode == 1, run.result
    assert run.result["reason"] in ("Timeout", "NetworkError"), run.result


def test_s3_unreachable_is_transient(
    media: MediaSet, media_server: MediaHTTPServer, tmp_path: Path
) -> None:
    env = _env(media_server, media.faststart, 10, 12, CLIP_NETWORK_TIMEOUT_SECONDS="3")
    _fail(run_worker(env, tmp_path), 1, "StorageUnavailable")


def test_wrong_s3_credentials_fail_permanently(
    media: MediaSet,
    media_server: MediaHTTPServer,
    s3_server: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    env = _env(media_server, media.faststart, 10, 12, **_s3_env(s3_server, s3_bucket, "x.mp4"))
    env["AWS_SECRET_ACCESS_KEY"] = "definitely-wrong"
    _fail(run_worker(env, tmp_path), 2, "StorageAuthFailed")
    listed = s3_server.client().list_objects_v2(Bucket=s3_bucket)
    assert listed.get("KeyCount", 0) == 0


@pytest.mark.parametrize(("fmt", "source"), [("mp3", "video_only"), ("gif", "audio_only")])
def test_missing_track_for_format(
    fmt: str, source: str, media: MediaSet, media_server: MediaHTTPServer, tmp_path: Path
) -> None:
    env = _env(media_server, getattr(media, source), 10, 12, CLIP_OUTPUT_FORMAT=fmt)
    _fail(run_worker(env, tmp_path), 2, "UnsupportedSource")
