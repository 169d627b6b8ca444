"""Issue 13: every clip exact, every failure named right.

Each test runs the worker as the Job does (a process with CLIP_* variables, real FFmpeg,
the media server, versitygw) on generated media of the shape that broke it: off-grid
starts, a window at the very end, truncated files, VP9/Opus in fast mode, a server that
stalls mid-body, and SIGTERM in the middle of an encode.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.mediaserver import MediaHTTPServer
from tests.plugins.media import (
    MediaSet,
    ShapeSet,
    WorkerRun,
    decoded_frames,
    extract_frame,
    ffprobe_json,
    last_frame,
    media_duration,
    psnr,
    run_worker,
    s3_target,
    worker_env,
)

pytestmark = pytest.mark.integration

# Names of the worker's own scratch files: a user must never see them in a message.
SCRATCH_NAMES = ("segment.mkv", "clip.mp4", "clip.webm", "part0", "part1", "part2", "audio.m4a",
                 "parts.ffconcat", "/scratch/", "/clip-")  # fmt: skip


_env, _s3 = worker_env, s3_target


def _fetch(s3_server: Any, bucket: str, key: str, to: Path) -> Path:
    body = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    to.write_bytes(body)
    return to


def _objects(s3_server: Any, bucket: str) -> int:
    return int(s3_server.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0))


def _ok(run: WorkerRun) -> dict[str, Any]:
    assert run.returncode == 0, f"worker failed: {run.result} {run.stderr[-2000:]}"
    assert "Traceback" not in run.stderr
    return run.result


def _failed(run: WorkerRun, code: int, *reasons: str) -> str:
    assert run.returncode == code, (run.returncode, run.result, run.stderr[-1500:])
    assert run.result.get("reason") in reasons, run.result
    message = str(run.result.get("message"))
    assert message and "Traceback" not in run.stderr
    for name in SCRATCH_NAMES:
        assert name not in message, f"scratch name {name!r} in the message: {message}"
    return message


def _frame_times(path: Path) -> list[float]:
    data = ffprobe_json(path, "-select_streams", "v:0", "-show_entries", "packet=pts_time")
    return sorted(float(p["pts_time"]) for p in data["packets"] if p.get("pts_time") != "N/A")


def _expected(source: Path, start: float, end: float) -> list[float]:
    return [t for t in _frame_times(source) if start - 0.0005 <= t < end - 0.0005]


def _last_frame_psnr(clip: Path, source: Path, source_index: int, tmp: Path) -> float:
    last_frame(clip, tmp / "clip-last.png")
    extract_frame(source, source_index, tmp / "src-last.png")
    return psnr(tmp / "src-last.png", tmp / "clip-last.png")


# ---- item 1: the re-encode path keeps the last frame ---------------------------------------


@pytest.mark.parametrize(
    ("source", "start", "end", "fmt"),
    [
        ("ntsc", 0.0, 5.0, "mp4"),  # 29.97 fps, 10 s GOP: no whole GOP, so a full re-encode
        ("pal", 12.3, 17.3, "webm"),  # start half a frame off the 25 fps grid
        ("ntsc", 3.37, 8.37, "webm"),
    ],
)
def test_reencode_keeps_the_last_frame(
    source: str, start: float, end: float, fmt: str, shapes: ShapeSet,
    shapes_server: MediaHTTPServer, s3_server: Any, s3_bucket: str, tmp_path: Path,
) -> None:  # fmt: skip
    name = getattr(shapes, source)
    env = _env(f"{shapes_server.url}/{name}", start, end, fmt, **_s3(s3_server, s3_bucket, "c"))
    result = _ok(run_worker(env, tmp_path))
    assert result["cutPath"] == "reencode"
    clip = _fetch(s3_server, s3_bucket, "c", tmp_path / f"clip.{fmt}")
    want = _expected(shapes.path(name), start, end)
    assert decoded_frames(clip) == len(want)
    all_times = _frame_times(shapes.path(name))
    score = _last_frame_psnr(clip, shapes.path(name), all_times.index(want[-1]), tmp_path)
    assert score >= 30, f"the last frame is not the source's frame at {want[-1]} ({score} dB)"


# ---- item 2: fast MP4 from VP9/Opus --------------------------------------------------------


def test_fast_mp4_from_vp9_opus_webm_plays(
    shapes: ShapeSet, shapes_server: MediaHTTPServer, s3_server: Any, s3_bucket: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    env = _env(f"{shapes_server.url}/{shapes.vp9}", 5.0, 9.0, "mp4", "fast",
               **_s3(s3_server, s3_bucket, "v.mp4"))  # fmt: skip
    result = _ok(run_worker(env, tmp_path))
    clip = _fetch(s3_server, s3_bucket, "v.mp4", tmp_path / "v.mp4")
    # An empty vpcC box (what -nofind_stream_info wrote) makes readers fail on the header.
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name",
                            "-of", "csv=p=0", str(clip)], capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    assert probe.returncode == 0 and not probe.stderr.strip(), probe.stderr
    assert probe.stdout.split() == ["vp9", "opus"]
    assert abs(media_duration(clip) - 4.0) <= 0.05
    assert result["durationSeconds"] == pytest.approx(4.0, abs=0.05)
    assert decoded_frames(clip) == 100


# ---- item 3: a stalled source is transient --------------------------------------------------


class _StallAfterHeaders(BaseHTTPRequestHandler):
    """Serves a file's headers and first bytes for each range, then sends nothing."""

    protocol_version = "HTTP/1.1"
    server: _StallServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        data = self.server.data
        start, end = 0, len(data) - 1
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes="):
            first, _, last = rng[6:].partition("-")
            start = int(first or 0)
            end = min(int(last), end) if last else end
        self.send_response(206 if rng else 200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if head:
            return
        # The index (first bytes) flows; media data past it stalls after a few KiB.
        stop = max(start, self.server.flowing_bytes) if start < self.server.flowing_bytes else start
        with self.server.lock:
            self.server.stalls += stop <= end
        try:
            slack = 4096 if self.server.flowing_bytes else 0  # 0: not one body byte
            self.wfile.write(data[start : min(end + 1, stop + slack)])
            self.wfile.flush()
        except OSError:
            return
        self.server.release.wait(60)
        self.close_connection = True


class _StallServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, data: bytes, flowing_bytes: int) -> None:
        self.data = data
        self.flowing_bytes = flowing_bytes
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.stalls = 0
        super().__init__(("127.0.0.1", 0), _StallAfterHeaders)


@pytest.fixture(params=[64 * 1024, 0], ids=["stalls-after-the-index", "stalls-at-once"])
def stall_server(shapes: ShapeSet, request: pytest.FixtureRequest) -> Iterator[_StallServer]:
    """Stalls after the index (in the media data), or before the first body byte."""
    data = shapes.path(shapes.pal).read_bytes()
    server = _StallServer(data, flowing_bytes=request.param)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


def test_source_that_stalls_mid_body_is_a_transient_timeout(
    stall_server: _StallServer, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{stall_server.server_address[1]}/pal.mp4"
    began = time.monotonic()
    run = run_worker(_env(url, 20, 24, CLIP_NETWORK_TIMEOUT_SECONDS="3"), tmp_path, timeout=120)
    took = time.monotonic() - began
    message = _failed(run, 1, "Timeout", "NetworkError")
    assert stall_server.stalls >= 1  # the headers came, then the body stopped
    assert took < 40, took
    assert "3" in message, message


# ---- item 4: truncated sources ---------------------------------------------------------------


def _data_end(path: Path) -> float:
    """Time of the last video frame whose data is in a truncated file, plus one frame."""
    done = subprocess.run(
        ["ffprobe", "-v", "quiet", "-of", "json", "-select_streams", "v:0", "-show_entries",
         "frame=pts_time", str(path)], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    times = [float(f["pts_time"]) for f in json.loads(done.stdout or "{}").get("frames", [])]
    return max(times) + 1 / 25


def test_truncated_source_clip_ends_where_the_data_ends(
    shapes: ShapeSet, shapes_server: MediaHTTPServer, s3_server: Any, s3_bucket: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    data_end = _data_end(shapes.path(shapes.truncated))
    start = round(data_end - 1.5, 2)
    env = _env(f"{shapes_server.url}/{shapes.truncated}", start, start + 5,
               **_s3(s3_server, s3_bucket, "t.mp4"))  # fmt: skip
    result = _ok(run_worker(env, tmp_path))
    assert result.get("truncated") is True, result
    clip = _fetch(s3_server, s3_bucket, "t.mp4", tmp_path / "t.mp4")
    made = media_duration(clip)
    assert result["durationSeconds"] == pytest.approx(made, abs=0.001)
    assert abs(made - (data_end - start)) <= 0.05, (made, data_end, start)
    assert decoded_frames(clip) == len(_expected(shapes.path(shapes.pal), start, data_end))


@pytest.mark.parametrize("mode", ["accurate", "fast"])
def test_truncated_source_start_beyond_the_data_is_named(
    mode: str, shapes: ShapeSet, shapes_server: MediaHTTPServer, s3_server: Any,
    s3_bucket: str, tmp_path: Path,
) -> None:  # fmt: skip
    env = _env(f"{shapes_server.url}/{shapes.truncated}", 20, 25, mode=mode,
               **_s3(s3_server, s3_bucket, "t.mp4"))  # fmt: skip
    message = _failed(run_worker(env, tmp_path), 2, "StartBeyondEnd", "UnsupportedSource")
    assert "20" in message
    assert _objects(s3_server, s3_bucket) == 0


@pytest.mark.parametrize("mode", ["accurate", "fast"])
def test_source_data_that_does_not_decode_is_permanent(
    mode: str, shapes: ShapeSet, shapes_server: MediaHTTPServer, s3_server: Any,
    s3_bucket: str, tmp_path: Path,
) -> None:  # fmt: skip
    env = _env(f"{shapes_server.url}/{shapes.corrupt}", 20, 22, mode=mode,
               **_s3(s3_server, s3_bucket, "c.mp4"))  # fmt: skip
    message = _failed(run_worker(env, tmp_path), 2, "UnsupportedSource")
    assert "damaged" in message or "decode" in message, message
    assert _objects(s3_server, s3_bucket) == 0


def _noise_band(source: Path, out: Path, begin: float, end: float) -> None:
    """`source` with the bytes between fractions `begin` and `end` of it turned to noise."""
    whole = bytearray(source.read_bytes())
    a, b = int(len(whole) * begin), int(len(whole) * end)
    blocks = range((b - a) // 32 + 1)
    noise = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in blocks)
    whole[a:b] = noise[: b - a]
    out.write_bytes(bytes(whole))


@pytest.mark.parametrize("mode", ["fast", "accurate"])
@pytest.mark.parametrize(
    "where", ["middle", "tail"], ids=["damage-in-the-middle", "damage-at-the-end"]
)
def test_damage_anywhere_in_the_clip_fails_it(
    mode: str, where: str, shapes: ShapeSet, s3_server: Any, s3_bucket: str, tmp_path: Path,
) -> None:  # fmt: skip
    """Fast mode's check decodes only the ends of its stream copy; damage between them is
    still found (every packet goes through the codec's parser), and nothing is stored."""
    served = tmp_path / "served"
    served.mkdir()
    if where == "middle":
        # pal: index first, 30 s; ~45-47 % of its bytes is media from about 13.5 s to 14 s,
        # between the clip's first GOP (10-12 s) and its last (16-18 s).
        _noise_band(shapes.root / shapes.pal, served / "damaged.mp4", 0.45, 0.47)
        start, end = 10.0, 18.0
    else:
        (served / "damaged.mp4").write_bytes((shapes.root / shapes.corrupt).read_bytes())
        start, end = 3.3, 6.3  # noise from 6 s on: the clip's last GOP
    server = MediaHTTPServer(served, "127.0.0.1", 0)
    server.start()
    try:
        env = _env(f"{server.url}/damaged.mp4", start, end, mode=mode,
                   **_s3(s3_server, s3_bucket, "d.mp4"))  # fmt: skip
        message = _failed(run_worker(env, tmp_path), 2, "UnsupportedSource")
    finally:
        server.shutdown()
        server.server_close()
    assert "damaged" in message or "decode" in message, message
    assert _objects(s3_server, s3_bucket) == 0


# ---- item 5: a window after the last video frame ----------------------------------------


@pytest.mark.parametrize("mode", ["accurate", "fast"])
def test_mp4_window_after_the_last_video_frame_fails_named(
    mode: str, shapes: ShapeSet, shapes_server: MediaHTTPServer, s3_server: Any,
    s3_bucket: str, tmp_path: Path,
) -> None:  # fmt: skip
    env = _env(f"{shapes_server.url}/{shapes.audio_longer}", 8.01, 8.5, mode=mode,
               **_s3(s3_server, s3_bucket, "a.mp4"))  # fmt: skip
    message = _failed(run_worker(env, tmp_path), 2, "StartBeyondEnd")
    assert "video" in message
    assert _objects(s3_server, s3_bucket) == 0


def test_mp3_window_after_the_last_video_frame_has_the_audio(
    shapes: ShapeSet, shapes_server: MediaHTTPServer, s3_server: Any, s3_bucket: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    env = _env(f"{shapes_server.url}/{shapes.audio_longer}", 8.01, 8.5, "mp3",
               **_s3(s3_server, s3_bucket, "a.mp3"))  # fmt: skip
    _ok(run_worker(env, tmp_path))
    clip = _fetch(s3_server, s3_bucket, "a.mp3", tmp_path / "a.mp3")
    assert abs(media_duration(clip) - 0.49) <= 0.06


# ---- item 6: StartBeyondEnd from the index alone ---------------------------------------------


def _last_gop_bytes(path: Path) -> int:
    data = ffprobe_json(
        path, "-select_streams", "v:0", "-show_entries", "packet=pts_time,size,flags"
    )
    total = 0
    for packet in sorted(data["packets"], key=lambda p: float(p["pts_time"])):
        total = 0 if "K" in packet["flags"] else total
        total += int(packet["size"])
    return total


def test_start_beyond_end_fetches_only_the_index(
    shapes: ShapeSet, shapes_server: MediaHTTPServer, tmp_path: Path
) -> None:
    """The 10 s GOP source with its index last: the index gives the duration, so the last
    GOP (a third of the file) is never fetched."""
    name = shapes.ntsc
    before = shapes_server.stats.bytes(f"/{name}")
    message = _failed(run_worker(_env(f"{shapes_server.url}/{name}", 40, 45), tmp_path), 2,
                      "StartBeyondEnd")  # fmt: skip
    assert "30." in message
    fetched = shapes_server.stats.bytes(f"/{name}") - before
    # What is fetched is the index and the read-ahead of the first request (130-280 KB
    # here, by timing), never the last GOP as well (before the fix: 717 KB).
    last_gop = _last_gop_bytes(shapes.path(name))
    assert fetched < last_gop, (fetched, last_gop)


# ---- item 7: SIGTERM ---------------------------------------------------------------------


def _children(pid: int) -> list[tuple[int, str]]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append((int(entry.name), cmdline))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_sigterm_mid_encode_stops_children_reports_and_cleans(
    media: MediaSet, media_server: MediaHTTPServer, tmp_path: Path
) -> None:
    log = tmp_path / "termination-log"
    scratch = tmp_path / "scratch"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLIP_", "AWS_"))}
    env.update(_env(f"{media_server.url}/{media.faststart}", 10, 250, "webm",
                    CLIP_TERMINATION_LOG=str(log), CLIP_WORK_DIR=str(scratch)))  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "clip_worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        encoder = None
        deadline = time.monotonic() + 120
        while encoder is None and time.monotonic() < deadline and proc.poll() is None:
            encoder = next((pid for pid, cmd in _children(proc.pid) if "libvpx-vp9" in cmd), None)
            if encoder is None:
                time.sleep(0.1)
        assert encoder is not None, "the worker never started its encode"
        assert any(scratch.iterdir())
        os.kill(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    result = json.loads(log.read_text())
    assert result["reason"] == "Terminated", result
    assert "SIGTERM" in result["message"]
    assert not _alive(encoder), "the FFmpeg child outlived the worker"
    assert list(scratch.iterdir()) == [], "scratch files left behind"
    assert "Terminated" in stderr and "Traceback" not in stderr


def test_sigterm_as_pid_1_is_handled(shapes: ShapeSet, tmp_path: Path) -> None:
    """In the image the worker is PID 1, where signals without a handler are ignored."""
    if os.geteuid() != 0 or not Path("/usr/bin/unshare").exists():
        pytest.skip("needs root and util-linux unshare for a PID namespace (run as root)")
    log = tmp_path / "termination-log"
    # A source that never answers: the worker sits in its download until the signal.
    hold = socket.socket()
    hold.bind(("127.0.0.1", 0))
    hold.listen(1)
    port = hold.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLIP_", "AWS_"))}
    env.update(_env(f"http://127.0.0.1:{port}/x.mp4", 1, 2, CLIP_TERMINATION_LOG=str(log),
                    CLIP_WORK_DIR=str(tmp_path / "scratch"),
                    CLIP_NETWORK_TIMEOUT_SECONDS="60"))  # fmt: skip
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child",
                             sys.executable, "-m", "clip_worker"], env=env,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        inner = None
        deadline = time.monotonic() + 30
        while inner is None and time.monotonic() < deadline:
            inner = next((pid for pid, _ in _children(proc.pid)), None)
            time.sleep(0.05)
        assert inner is not None
        conn_deadline = time.monotonic() + 30
        hold.settimeout(30)
        conn, _ = hold.accept()  # the worker is now waiting on the source
        assert time.monotonic() < conn_deadline
        os.kill(inner, signal.SIGTERM)
        proc.communicate(timeout=20)
        conn.close()
    finally:
        hold.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    result = json.loads(log.read_text()) if log.exists() else {}
    assert result.get("reason") == "Terminated", result
