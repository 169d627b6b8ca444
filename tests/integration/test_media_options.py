"""Issue 16's options on real decoded frames: the real worker (FFmpeg, yt-dlp, versitygw) on
small generated sources. Captions are read back with OCR (tesseract), crops are checked by
size and by a coloured marker at a known place, loudness is measured on the output."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.mediaserver import MediaHTTPServer
from tests.plugins.media import WorkerRun, ffprobe_json, run_worker, s3_target, worker_env

pytestmark = pytest.mark.integration

# Marker source: grey frame, a red bar at x 560..599 of 640 (a crop either holds it or not).
MARKER_X = (560, 600)


def _ffmpeg(*args: str) -> None:
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    subprocess.run(cmd, check=True, timeout=300)


def _h264(video: str, seconds: float, out: Path, volume: float = 1.0, then: str = "") -> None:
    _ffmpeg(
        "-f", "lavfi", "-i", f"{video}:rate=25:duration={seconds}{then}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-map", "0:v", "-map", "1:a", "-af", f"volume={volume}",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
        "-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-bf", "0",
        "-c:a", "aac", "-b:a", "96k", "-movflags", "+faststart", str(out),
    )  # fmt: skip


# Source times; the clip is 0.5-2.5 s: BEFORE ends first, HELLO shows at clip 0.5-1.1 s,
# SECOND at clip 1.4-1.8 s (with hostile text), LATER starts after the clip.
SUBTITLES = """WEBVTT

00:00.000 --> 00:00.400
BEFORE

00:01.000 --> 00:01.600
<i>HELLO</i> THERE

00:01.900 --> 00:02.300
SECOND 50%: %{pts}

00:02.600 --> 00:04.000
LATER
"""


@dataclass(frozen=True)
class Sources:
    root: Path
    server: MediaHTTPServer

    def url(self, name: str) -> str:
        return f"{self.server.url}/{name}"


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sources]:
    """Three short sources (a few seconds to make on 2 cores)."""
    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg not installed (apt-get install ffmpeg)")
    root = tmp_path_factory.mktemp("media-options")
    _h264("testsrc2=size=640x360", 3, root / "land.mp4")
    _h264("testsrc2=size=1280x720", 2, root / "wide.mp4")
    _h264("color=c=gray:size=640x360", 3, root / "marker.mp4",
          then=f",drawbox=x={MARKER_X[0]}:y=0:w=40:h=360:c=red:t=fill")  # fmt: skip
    _h264("testsrc2=size=320x180", 3, root / "quiet.mp4", volume=0.05)
    _ffmpeg("-f", "lavfi", "-i", "color=c=blue:size=64x64", "-frames:v", "1", str(root / "wm.png"))
    (root / "not-an-image.png").write_text("<html>a page, not an image</html>")
    (root / "subs.vtt").write_text(SUBTITLES, encoding="utf-8")
    (root / "page.html").write_text(
        "<html><head><title>a page</title></head><body><video controls src='marker.mp4'>"
        "<track kind='subtitles' src='subs.vtt' srclang='en' label='English'></video></body></html>"
    )
    server = MediaHTTPServer(root, "127.0.0.1", 0)
    server.start()
    try:
        yield Sources(root, server)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def ocr() -> str:
    found = shutil.which("tesseract")
    if not found:
        pytest.skip("tesseract not installed (apt-get install tesseract-ocr; hack/setup.sh)")
    return found


def _make(
    sources: Sources, s3_server: Any, bucket: str, tmp: Path, name: str, fmt: str, **extra: str
) -> tuple[WorkerRun, Path]:
    key = f"opts/{tmp.name}.{fmt}"
    env = worker_env(sources.url(name), 0.5, 2.5 if name != "wide.mp4" else 1.5, fmt,
                     **s3_target(s3_server, bucket, key), **extra)  # fmt: skip
    run = run_worker(env, tmp)
    assert run.returncode == 0, f"worker failed: {run.result} {run.stderr[-2000:]}"
    clip = tmp / f"clip.{fmt}"
    clip.write_bytes(s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    return run, clip


def _frame(clip: Path, out: Path, at: float = 0.5) -> Path:
    _ffmpeg("-ss", f"{at}", "-i", str(clip), "-frames:v", "1", str(out))
    return out


def _size(path: Path) -> tuple[int, int]:
    stream = ffprobe_json(path, "-select_streams", "v:0", "-show_entries", "stream=width,height")
    return int(stream["streams"][0]["width"]), int(stream["streams"][0]["height"])


def _read(tesseract: str, frame: Path, region: str, psm: str = "6") -> str:
    """OCR of the top or bottom 40 % of a frame: the white caption pixels (every channel
    above 200) as black on white, scaled up for small GIF/portrait type (tesseract cannot
    separate white text from the busy, bright test pattern by itself)."""
    w, h = _size(frame)
    band = int(h * 0.4)
    rows = _pixels(frame)
    rows = rows[:band] if region == "top" else rows[h - band :]
    scale = max(1, round(1200 / w))
    out = bytearray()
    for row in rows:
        line = bytes(0 if min(px) > 200 else 255 for px in row for _ in range(scale))
        out += line * scale
    part = frame.with_name(f"{frame.stem}-{region}.pgm")
    part.write_bytes(f"P5 {w * scale} {band * scale} 255\n".encode() + bytes(out))
    done = subprocess.run([tesseract, str(part), "-", "--psm", psm], capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    return done.stdout


CASES = [
    # name, source, format, extra env, output size
    ("landscape-mp4", "land.mp4", "mp4", {}, (640, 360)),
    ("gif-480", "land.mp4", "gif", {}, (480, 270)),
    ("portrait-9x16", "wide.mp4", "mp4", {"CLIP_CROP_ASPECT": "9:16"}, (396, 704)),
]


@pytest.mark.parametrize(("name", "source", "fmt", "extra", "size"), CASES,
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_captions_are_read_back_top_and_bottom(
    sources: Sources, ocr: str, s3_server: Any, s3_bucket: str, tmp_path: Path,
    name: str, source: str, fmt: str, extra: dict[str, str], size: tuple[int, int],
) -> None:  # fmt: skip
    run, clip = _make(sources, s3_server, s3_bucket, tmp_path, source, fmt,
                      CLIP_CAPTION_TOP="when the build", CLIP_CAPTION_BOTTOM="passes first time",
                      CLIP_CAPTION_UPPERCASE="true", **extra)  # fmt: skip
    assert run.result["cutPath"] == "reencode"
    assert (run.result["width"], run.result["height"]) == size == _size(clip)
    frame = _frame(clip, tmp_path / "frame.png")
    top, bottom = _read(ocr, frame, "top"), _read(ocr, frame, "bottom")
    assert "BUILD" in top and "PASSES" not in top, top
    assert "PASSES" in bottom and "FIRST" in bottom and "BUILD" not in bottom, bottom


def test_hostile_caption_text_is_drawn_literally(
    sources: Sources, ocr: str, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    hostile = "it's 50%: a\\b %{pts} [x];"
    _, clip = _make(sources, s3_server, s3_bucket, tmp_path, "marker.mp4", "mp4",
                    CLIP_CAPTION_TOP=hostile, CLIP_CAPTION_BOTTOM="FIRST\nSECOND")  # fmt: skip
    frame = _frame(clip, tmp_path / "frame.png")
    top = _read(ocr, frame, "top").replace("\n", " ")
    for piece in ("it's", "50%:", "a\\b", "%{pts}", "[x];"):
        assert piece in top.lower(), (piece, top)  # (tesseract reads "it's" as "It's")
    lines = [line.strip() for line in _read(ocr, frame, "bottom").splitlines() if line.strip()]
    assert lines[-2:] == ["FIRST", "SECOND"], lines


def test_long_caption_wraps_inside_the_frame(
    sources: Sources, ocr: str, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    text = "supercalifragilistic " * 14  # 294 characters: many lines, smaller type
    _, clip = _make(sources, s3_server, s3_bucket, tmp_path, "marker.mp4", "mp4",
                    CLIP_CAPTION_TOP=text)  # fmt: skip
    frame = _frame(clip, tmp_path / "frame.png")
    assert _read(ocr, frame, "top").count("supercalifragilistic") >= 2
    # The outline (black) never reaches the frame's side columns (4 % margin each side).
    rgb = _pixels(frame)
    w, h = _size(frame)
    for x in (0, 1, w - 2, w - 1):
        assert all(rgb[y][x][0] > 60 for y in range(h)), f"text reached column {x}"


def _pixels(png: Path) -> list[list[tuple[int, int, int]]]:
    w, h = _size(png)
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(png), "-f", "rawvideo",
         "-pix_fmt", "rgb24", "-"], capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return [[(raw[3 * (y * w + x)], raw[3 * (y * w + x) + 1], raw[3 * (y * w + x) + 2])
             for x in range(w)] for y in range(h)]  # fmt: skip


def _red_columns(png: Path) -> list[int]:
    rgb = _pixels(png)
    mid = rgb[len(rgb) // 2]
    return [x for x, (r, g, b) in enumerate(mid) if r > 150 and g < 90 and b < 90]


@pytest.mark.parametrize(("position", "red"), [("1", True), ("0", False), ("0.5", False)])
def test_crop_keeps_exact_aspect_at_its_position(
    sources: Sources, s3_server: Any, s3_bucket: str, tmp_path: Path, position: str, red: bool
) -> None:
    run, clip = _make(sources, s3_server, s3_bucket, tmp_path, "marker.mp4", "mp4",
                      CLIP_CROP_ASPECT="9:16", CLIP_CROP_POSITION=position)  # fmt: skip
    w, h = _size(clip)
    assert (w, h) == (198, 352) and w * 16 == h * 9  # k = 22: the largest even 9k x 16k
    assert run.result["cutPath"] == "reencode"
    columns = _red_columns(_frame(clip, tmp_path / "frame.png"))
    if red:
        # Cropped at the right edge: x 442..639 of the source, the bar at 560..599.
        left = MARKER_X[0] - (640 - w)
        assert columns and abs(columns[0] - left) <= 2 and abs(columns[-1] - (left + 39)) <= 2
    else:
        assert not columns, columns


def test_crop_with_max_height_and_gif(
    sources: Sources, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    run, clip = _make(sources, s3_server, s3_bucket, tmp_path, "marker.mp4", "gif",
                      CLIP_CROP_ASPECT="4:5", CLIP_MAX_HEIGHT="150")  # fmt: skip
    w, h = _size(clip)
    assert h <= 150 and w * 5 == h * 4, (w, h)
    assert (run.result["width"], run.result["height"]) == (w, h)


def _lufs(path: Path) -> float:
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-i", str(path), "-map", "0:a:0",
         "-af", "ebur128", "-f", "null", "-"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = re.findall(r"I:\s+(-?[\d.]+) LUFS", out.stderr)
    assert found, out.stderr[-1000:]
    return float(found[-1])


LOUDNESS = [("mp4", "-14", "smart"), ("webm", "-23", "reencode"), ("mp3", "-16", "reencode")]


@pytest.mark.parametrize(("fmt", "target", "cut"), LOUDNESS)
def test_loudness_is_normalised_and_reported(
    sources: Sources, s3_server: Any, s3_bucket: str, tmp_path: Path, fmt: str, target: str,
    cut: str,
) -> None:  # fmt: skip
    before = _lufs(sources.root / "quiet.mp4")
    run, clip = _make(sources, s3_server, s3_bucket, tmp_path, "quiet.mp4", fmt,
                      CLIP_LOUDNESS_TARGET=target)  # fmt: skip
    measured = _lufs(clip)
    assert abs(measured - float(target)) <= 1.0, (before, measured)
    assert abs(before - float(target)) > 5  # the source really was far off
    report = run.result["loudness"]
    assert report["targetLufs"] == float(target)
    assert abs(report["integratedLufs"] - measured) <= 0.3, report
    assert report["truePeakDbtp"] <= -1.0 + 0.5
    # Loudness only touches the audio: the smart cut (copied middle GOPs) stays.
    assert run.result["cutPath"] == cut


@pytest.mark.parametrize(("fmt", "at", "frame", "extra"), [
    ("jpeg", None, 13, {}),  # default: the clip's first frame (source frame 13, 0.52 s)
    ("webp", "1", 38, {}),  # 1 s into the clip (1.5 s): source frame 38 (1.52 s)
    # A 15 fps GIF of the 1:1 crop: 0.4 s in is the source frame at 0.92 s (23).
    ("jpeg", "0.4", 23, {"CLIP_CROP_ASPECT": "1:1", "CLIP_OUTPUT_FORMAT": "gif"}),
])  # fmt: skip
def test_thumbnail_is_the_clip_frame_at_its_time_beside_the_clip(
    sources: Sources, s3_server: Any, s3_bucket: str, tmp_path: Path, fmt: str,
    at: str | None, frame: int, extra: dict[str, str],
) -> None:  # fmt: skip
    from tests.plugins.media import extract_frame, psnr

    env = {"CLIP_THUMBNAIL_FORMAT": fmt, **({"CLIP_THUMBNAIL_AT": at} if at else {}), **extra}
    out_fmt = env.pop("CLIP_OUTPUT_FORMAT", "mp4")
    run, clip = _make(sources, s3_server, s3_bucket, tmp_path, "land.mp4", out_fmt, **env)
    thumb = run.result["thumbnail"]
    key = f"opts/{tmp_path.name}.{out_fmt}.thumb.{'jpg' if fmt == 'jpeg' else 'webp'}"
    assert thumb["key"] == key and thumb["contentType"] == f"image/{fmt}"
    obj = s3_server.client().get_object(Bucket=s3_bucket, Key=key)
    assert obj["ContentType"] == f"image/{fmt}"
    still = tmp_path / f"thumb.{fmt}"
    still.write_bytes(obj["Body"].read())
    assert (thumb["width"], thumb["height"]) == _size(still) == _size(clip)
    # The source frame at that time, cropped and scaled as the clip is: the best match of
    # its neighbours, and a close one.
    vf = "crop=360:360:140:0" if extra else "null"
    scores = {}
    for n in (frame - 1, frame, frame + 1):
        ref = tmp_path / f"src{n}.png"
        extract_frame(sources.root / "land.mp4", n, ref)
        _ffmpeg("-i", str(ref), "-vf", vf, str(tmp_path / f"ref{n}.png"))
        scores[n] = psnr(tmp_path / f"ref{n}.png", still)
    assert max(scores, key=lambda n: scores[n]) == frame, scores
    assert scores[frame] > 30, scores


def test_operator_presigns_the_thumbnail_put_and_the_worker_uses_it(
    sources: Sources, s3_server: Any, s3_bucket: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The operator's Presigner and build_job, then the worker with exactly the Job's
    variables and no credentials: the clip and its thumbnail land side by side."""
    import asyncio

    from clip_operator.builders import ClipJobRef, build_job
    from clip_operator.config import load_config
    from clip_operator.models import parse_spec
    from clip_operator.presign import Presigner

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    config = load_config({"CLIP_OPERATOR_S3_ENDPOINT": s3_server.endpoint,
                          "CLIP_OPERATOR_S3_REGION": s3_server.region,
                          "CLIP_OPERATOR_S3_BUCKET": s3_bucket})  # fmt: skip
    spec = parse_spec({"source": {"url": sources.url("land.mp4")}, "start": "0.5", "end": "2.5",
                       "captions": {"top": "THUMBS UP"},
                       "thumbnail": {"format": "webp", "atSeconds": 1}})  # fmt: skip
    ref = ClipJobRef("thumbs", "media", "5e1f0000-0000-0000-0000-000000000001")
    key = "media/thumbs-5e1f0000.mp4"
    upload = asyncio.run(Presigner(None, config).presign_upload(ref, spec, s3_bucket, key, 300))  # type: ignore[arg-type]
    job = build_job(ref, spec, config, upload)
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CLIP_THUMBNAIL_KEY"] == key + ".thumb.webp" and "CLIP_THUMBNAIL_URL" in env
    env.update(CLIP_ALLOW_PRIVATE_NETWORKS="127.0.0.0/8", HOME=str(tmp_path),
               CLIP_ALLOW_PORTS=str(sources.server.server_address[1]))  # fmt: skip
    for name in ("CLIP_WORK_DIR", "CLIP_TERMINATION_LOG"):
        env.pop(name)
    run = run_worker(env, tmp_path)
    assert run.returncode == 0, f"{run.result} {run.stderr[-2000:]}"
    assert not any(k.startswith("AWS_") for k in env)
    thumb = s3_server.client().get_object(Bucket=s3_bucket, Key=key + ".thumb.webp")
    assert thumb["ContentType"] == "image/webp"
    assert thumb["ContentLength"] == run.result["thumbnail"]["sizeBytes"]
    assert (run.result["thumbnail"]["width"], run.result["thumbnail"]["height"]) == (640, 360)
    assert s3_server.client().head_object(Bucket=s3_bucket, Key=key)["ContentLength"] > 0


def _fails(run: WorkerRun, reason: str, code: int) -> None:
    assert (run.returncode, run.result.get("reason")) == (code, reason), run.result


@pytest.mark.parametrize(("position", "opacity"), [("bottom-right", "1"), ("top-left", "0.5")])
def test_watermark_changes_its_corner_and_nothing_else(
    sources: Sources, s3_server: Any, s3_bucket: str, tmp_path: Path, position: str,
    opacity: str,
) -> None:  # fmt: skip
    run, clip = _make(sources, s3_server, s3_bucket, tmp_path, "marker.mp4", "mp4",
                      CLIP_WATERMARK_URL=sources.url("wm.png"), CLIP_WATERMARK_POSITION=position,
                      CLIP_WATERMARK_OPACITY=opacity, CLIP_WATERMARK_WIDTH="0.2")  # fmt: skip
    assert run.result["cutPath"] == "reencode"
    out = _pixels(_frame(clip, tmp_path / "frame.png"))
    src = _pixels(_frame(sources.root / "marker.mp4", tmp_path / "source.png", at=1.0))
    side, margin = 128, 19  # 20 % of 640, 3 % margin
    x0 = 640 - side - margin if position.endswith("right") else margin
    y0 = 360 - side - margin if position.startswith("bottom") else margin
    inside = [
        (x, y) for x in range(x0 + 4, x0 + side - 4, 7) for y in range(y0 + 4, y0 + side - 4, 7)
    ]
    for x, y in inside:
        r, _, b = out[y][x]
        assert b > r + 40, ((x, y), out[y][x], src[y][x])  # blue over the grey
        if opacity == "0.5":
            assert r > 40, ((x, y), out[y][x])  # half of the grey shows through
    box = range(x0 - 3, x0 + side + 3), range(y0 - 3, y0 + side + 3)
    for y in range(0, 360, 5):
        for x in range(0, 640, 5):
            if x in box[0] and y in box[1]:
                continue
            assert max(abs(a - b) for a, b in zip(out[y][x], src[y][x], strict=True)) <= 12, (
                (x, y), out[y][x], src[y][x])  # fmt: skip


def test_watermark_url_goes_through_the_egress_guard(
    sources: Sources, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    from clip_worker.netguard import REFUSED

    env = worker_env(sources.url("marker.mp4"), 0.5, 1.5, "mp4",
                     **s3_target(s3_server, s3_bucket, "wm-refused.mp4"),
                     CLIP_WATERMARK_URL="http://127.0.0.1:9/wm.png")  # fmt: skip
    run = run_worker(env, tmp_path)
    _fails(run, "ForbiddenAddress", 2)
    assert run.result["message"] == REFUSED
    listed = s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    assert not listed


def test_watermark_that_is_not_an_image_is_invalid_input(sources: Sources, tmp_path: Path) -> None:
    env = worker_env(sources.url("marker.mp4"), 0.5, 1.5, "gif",
                     CLIP_WATERMARK_URL=sources.url("not-an-image.png"))  # fmt: skip
    run = run_worker(env, tmp_path)
    _fails(run, "InvalidInput", 2)
    assert "not a PNG, JPEG or WebP image" in run.result["message"]
