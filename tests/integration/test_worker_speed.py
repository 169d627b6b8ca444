"""Where the worker's seconds went (issue 18), each removal checked on real FFmpeg and S3:
a URL that already names the media skips yt-dlp; the smart cut's head and tail are encoded
with cheap settings at no loss of closeness to the source; the output check decodes on
every core; the live-stream refusal holds without yt-dlp."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clip_worker import cut, probe
from tests.mediaserver import MediaHTTPServer
from tests.plugins.media import (
    MediaSet,
    decoded_frames,
    extract_frame,
    first_frame,
    last_frame,
    psnr,
    run_worker,
    s3_target,
    worker_env,
)

pytestmark = pytest.mark.integration

START = 123.4  # inside a GOP of the 25 fps test media (keyframes every 2 s)
LENGTH = 6.0
FPS = 25


@pytest.fixture
def no_ytdlp(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """A PYTHONPATH whose `yt_dlp` leaves a mark and fails to import: a run that needs
    yt-dlp fails, one that does not is untouched."""
    shadow = tmp_path / "shadow"
    (shadow / "yt_dlp").mkdir(parents=True)
    mark = tmp_path / "yt_dlp-imported"
    (shadow / "yt_dlp" / "__init__.py").write_text(
        f"open({str(mark)!r}, 'w').close()\nraise ImportError('yt-dlp is not wanted here')\n"
    )
    yield {"PYTHONPATH": str(shadow)}, mark


def _clip(s3_server: Any, bucket: str, key: str, to: Path) -> Path:
    to.write_bytes(s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    return to


@pytest.mark.parametrize("source", ["faststart", "hls"])
def test_a_url_naming_the_media_is_clipped_without_ytdlp(
    source: str,
    no_ytdlp: tuple[dict[str, str], Path],
    media: MediaSet,
    media_server: MediaHTTPServer,
    s3_server: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    """An MP4 file or an HLS media playlist is the media itself: no site extractor (yt-dlp
    costs 0.3-0.5 CPU s and a request of its own); the clip is the same exact clip."""
    env, mark = no_ytdlp
    url = f"{media_server.url}/{getattr(media, source)}"
    run = run_worker(
        {**worker_env(url, START, START + LENGTH), **env,
         **s3_target(s3_server, s3_bucket, "direct.mp4")},
        tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, f"{run.result} {run.stderr[-2000:]}"
    assert not mark.exists(), "yt-dlp was imported for a URL that names the media"
    assert run.result["cutPath"] == "smart"
    clip = _clip(s3_server, s3_bucket, "direct.mp4", tmp_path / "direct.mp4")
    assert decoded_frames(clip) == round(LENGTH * FPS)


def test_a_page_still_goes_through_ytdlp(
    no_ytdlp: tuple[dict[str, str], Path],
    media_server: MediaHTTPServer,
    tmp_path: Path,
) -> None:
    """The shortcut is for media only: a web page is handed to yt-dlp as before."""
    env, mark = no_ytdlp
    run = run_worker({**worker_env(f"{media_server.url}/_page.html", 1, 2), **env}, tmp_path)
    assert run.returncode != 0
    assert mark.exists(), "a web page was not handed to yt-dlp"


def test_a_live_media_playlist_is_refused_without_ytdlp(
    no_ytdlp: tuple[dict[str, str], Path],
    media: MediaSet,
    media_server: MediaHTTPServer,
    tmp_path: Path,
) -> None:
    """A media playlist without #EXT-X-ENDLIST is live (yt-dlp's rule): UnsupportedSource,
    as when yt-dlp said so."""
    env, mark = no_ytdlp
    live = tmp_path / "live"
    live.mkdir()
    base = f"{media_server.url}/{Path(media.hls).parent}/"
    lines = [
        line if line.startswith("#") or not line.strip() else base + line
        for line in media.path(media.hls).read_text().splitlines()
        if "ENDLIST" not in line and "PLAYLIST-TYPE" not in line
    ]
    (live / "index.m3u8").write_text("\n".join(lines) + "\n")
    server = MediaHTTPServer(live, "127.0.0.1", 0)
    server.start()
    try:
        url = f"{server.url}/index.m3u8"
        allow = f"{server.url.rpartition(':')[2]},{media_server.url.rpartition(':')[2]}"
        run = run_worker({**worker_env(url, 10, 14), **env, "CLIP_ALLOW_PORTS": allow}, tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.result["reason"] == "UnsupportedSource"
    assert "live stream" in run.result["message"]
    assert not mark.exists()


def _x264_settings(clip: Path) -> str:
    """The settings x264 wrote into the first encoded part of the clip (its SEI)."""
    data = clip.read_bytes()
    found = re.search(rb"x264 - core [^\x00]{0,2000}", data)
    assert found, "no x264 settings in the clip"
    return found.group(0).decode("latin-1")


def test_smart_cut_head_is_cheap_to_encode_and_still_close_to_the_source(
    media: MediaSet,
    media_server: MediaHTTPServer,
    s3_server: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    """The re-encoded head (the frames from start to the first keyframe) is x264
    ultrafast, a quarter of veryfast's CPU per frame, at a CRF that keeps its frames at
    least as close to the source as veryfast at CRF 18 did (the first frame here: 41.9 dB
    then, 42.9 dB now)."""
    url = f"{media_server.url}/{media.faststart}"
    run = run_worker(
        {**worker_env(url, START, START + LENGTH), **s3_target(s3_server, s3_bucket, "h.mp4")},
        tmp_path,
    )
    assert run.returncode == 0, f"{run.result} {run.stderr[-2000:]}"
    assert run.result["cutPath"] == "smart"
    clip = _clip(s3_server, s3_bucket, "h.mp4", tmp_path / "h.mp4")
    settings = _x264_settings(clip)
    assert " subme=0 " in settings and " cabac=0 " in settings, settings  # ultrafast
    assert f" crf={cut.PART_CRF:.1f} " in settings, settings
    first_frame(clip, tmp_path / "first.png")
    extract_frame(media.path(media.faststart), round(START * FPS), tmp_path / "source.png")
    assert psnr(tmp_path / "source.png", tmp_path / "first.png") >= 42.0


def test_output_check_decodes_on_every_core(
    media: MediaSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ffprobe's decoders run one thread unless asked: the check asks for frame threads
    (half the wall time on two cores) and skips the deblocking filter (~17 % of the
    decode; pixels the check never looks at), and still counts every frame."""
    clip = tmp_path / "c.mp4"
    shutil.copy(media.path(media.bframes), clip)
    seen: list[list[str]] = []
    real = probe.run

    def spy(args: list[str], *rest: Any, **kw: Any) -> Any:
        seen.append(args)
        return real(args, *rest, **kw)

    monkeypatch.setattr(probe, "run", spy)
    made = probe.made(str(clip), 120)
    assert made.video_frames == decoded_frames(clip) and not made.errors
    args = seen[-1]
    before_input = args[: args.index(str(clip))]
    assert before_input[before_input.index("-threads") + 1] == "0"
    assert before_input[before_input.index("-skip_loop_filter") + 1] == "all"


def test_a_clip_ending_on_a_keyframe_copies_its_last_gop(
    media: MediaSet,
    media_server: MediaHTTPServer,
    s3_server: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    """When the clip's end is a keyframe of the source (the next GOP starts there), the
    last GOP is whole: it is stream-copied, not re-encoded as a tail. Its last frame is
    then the source's own (PSNR inf; a re-encoded tail gave ~40 dB and 2 s of encoding
    for a 10 s clip on GOP boundaries, the time-to-link bench's case)."""
    end = 130.0  # a keyframe: every 2 s
    url = f"{media_server.url}/{media.faststart}"
    run = run_worker(
        {**worker_env(url, START, end), **s3_target(s3_server, s3_bucket, "t.mp4")}, tmp_path
    )
    assert run.returncode == 0, f"{run.result} {run.stderr[-2000:]}"
    assert run.result["cutPath"] == "smart"
    clip = _clip(s3_server, s3_bucket, "t.mp4", tmp_path / "t.mp4")
    assert decoded_frames(clip) == round((end - START) * FPS)
    last_frame(clip, tmp_path / "last.png")
    extract_frame(media.path(media.faststart), round(end * FPS) - 1, tmp_path / "source.png")
    assert psnr(tmp_path / "source.png", tmp_path / "last.png") == float("inf")
