"""One egress path (issue 12): every URL the worker meets, at any depth, is http(s) through
its egress proxy, or the job fails with one generic message before any connection.

A trap listens (TCP and UDP) on another loopback address, 127.0.0.2, outside the allowed
networks (127.0.0.1/32) and ports; crafted HLS playlists, redirects and mislabelled files
on a local server name it with every scheme FFmpeg or urllib could follow. The trap must
receive nothing, and every run must end with `ForbiddenAddress` and the same message.
Before the fix an HLS variant `tcp://127.0.0.2:PORT/...` made FFmpeg connect straight to
the trap, and the message differed by outcome ("Invalid data", "Connection refused").
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from clip_worker.netguard import REFUSED
from tests.mediaserver import MediaHTTPServer
from tests.plugins.media import MediaSet, WorkerRun, run_worker

pytestmark = pytest.mark.integration

TRAP_HOST = "127.0.0.2"


@dataclass
class Trap:
    """A TCP listener and a UDP socket on TRAP_HOST:port that record any contact."""

    tcp: socket.socket
    udp: socket.socket

    @property
    def port(self) -> int:
        return int(self.tcp.getsockname()[1])

    @property
    def where(self) -> str:
        return f"{TRAP_HOST}:{self.port}"

    def contacts(self) -> list[str]:
        """What reached the trap (the kernel queues connections and datagrams for us)."""
        seen = []
        for _ in range(64):
            try:
                conn, peer = self.tcp.accept()
            except BlockingIOError:
                break
            seen.append(f"tcp from {peer}")
            conn.close()
        for _ in range(64):
            try:
                _, peer = self.udp.recvfrom(65536)
            except BlockingIOError:
                break
            seen.append(f"udp from {peer}")
        return seen


@pytest.fixture
def trap() -> Iterator[Trap]:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind((TRAP_HOST, 0))
    tcp.listen(64)
    tcp.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((TRAP_HOST, tcp.getsockname()[1]))
    udp.setblocking(False)
    try:
        yield Trap(tcp, udp)
    finally:
        tcp.close()
        udp.close()


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaHTTPServer]:
    """A server for the crafted playlists (the media itself stays on media_server)."""
    server = MediaHTTPServer(tmp_path_factory.mktemp("crafted"), "127.0.0.1", 0)
    server.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _hostile(kind: str, trap: Trap) -> str:
    """A URL of the given kind that names the trap (directly or nested)."""
    t = trap.where
    nested = f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\ntcp://{t}/v.m3u8\n"
    return {
        "tcp": f"tcp://{t}/v.m3u8",
        "udp": f"udp://{t}/v.ts",
        "rtmp": f"rtmp://{t}/live/v",
        "rtsp": f"rtsp://{t}/v",
        "ftp": f"ftp://{t}/v.m3u8",
        "tls": f"tls://{t}/v.m3u8",
        "crypto+tcp": f"crypto+tcp://{t}/v.ts",
        "crypto+http": f"crypto+http://{t}/v.ts",
        "http": f"http://{t}/v.m3u8",
        "https": f"https://{t}/v.m3u8",
        "scheme-relative": f"//{t}/v.ts",
        "httpproxy": f"httpproxy://{t}/",
        "gopher": f"gopher://{t}/v",
        "async": f"async:tcp://{t}/v.ts",
        "concat": f"concat:tcp://{t}/a.ts|tcp://{t}/b.ts",
        "subfile": f"subfile,,start,0,end,1000,,:tcp://{t}/a.ts",
        "data": "data:application/vnd.apple.mpegurl;base64,"
        + base64.b64encode(nested.encode()).decode(),
        "file": "file:///etc/hostname",
    }[kind]


VARIANT_KINDS = ["tcp", "udp", "rtmp", "rtsp", "ftp", "tls", "crypto+tcp", "http", "https",
                 "file"]  # fmt: skip
NESTED_KINDS = ["tcp", "udp", "rtmp", "rtsp", "ftp", "tls", "crypto+tcp", "crypto+http", "http",
                "https", "scheme-relative", "httpproxy", "gopher", "async", "concat", "subfile",
                "data", "file"]  # fmt: skip


def _media_playlist(media: MediaSet, media_url: str, head: str = "", first: str = "") -> str:
    """The real HLS media playlist with absolute segment URLs; `head` tags go before the
    segments, `first` replaces the first segment."""
    lines = media.path(media.hls).read_text().splitlines()
    out: list[str] = []
    replaced = False
    for line in lines:
        if line.startswith("#EXTINF") and head:
            out.append(head)
            head = ""
        if line and not line.startswith("#"):
            if first and not replaced:
                out.append(first)
                replaced = True
                continue
            line = f"{media_url}/hls/{line}"
        out.append(line)
    return "\n".join(out) + "\n"


def _master(variant: str, low_variant: str | None = None, extra: str = "") -> str:
    text = "#EXTM3U\n" + extra
    if low_variant:
        text += f"#EXT-X-STREAM-INF:BANDWIDTH=100000,RESOLUTION=320x180\n{low_variant}\n"
    attrs = ',AUDIO="aud"' if "GROUP-ID" in extra else ""
    return text + f"#EXT-X-STREAM-INF:BANDWIDTH=9000000,RESOLUTION=1920x1080{attrs}\n{variant}\n"


def _serve(crafted: MediaHTTPServer, name: str, text: str) -> str:
    (Path(crafted.root) / name).write_text(text)
    return f"{crafted.url}/{name}"


def _run(url: str, crafted: MediaHTTPServer, media_server: MediaHTTPServer, tmp: Path) -> WorkerRun:
    env = {
        "CLIP_SOURCE_URL": url,
        "CLIP_START": "0.5",
        "CLIP_END": "1.5",
        "CLIP_OUTPUT_FORMAT": "mp4",
        "CLIP_MODE": "fast",
        "CLIP_ALLOW_PRIVATE_NETWORKS": "127.0.0.1/32",  # the trap's 127.0.0.2 is outside
        "CLIP_ALLOW_PORTS": f"{crafted.server_address[1]},{media_server.server_address[1]}",
        "CLIP_NETWORK_TIMEOUT_SECONDS": "5",
        "CLIP_S3_BUCKET": "clips",
        "CLIP_S3_KEY": "never/uploaded.mp4",
        "CLIP_UPLOAD_URL": "http://127.0.0.1:9/never",  # refused before any upload
    }
    return run_worker(env, tmp, timeout=120)


def _refused(run: WorkerRun, trap: Trap) -> None:
    assert trap.contacts() == [], f"the trap was reached: {run.result}"
    assert run.returncode == 2, f"{run.result} {run.stderr[-1500:]}"
    assert run.result == {"reason": "ForbiddenAddress", "message": REFUSED}
    assert trap.where not in run.stderr  # the log names no target either (debug aside)


@pytest.mark.parametrize("kind", VARIANT_KINDS)
def test_hls_variant_with_another_scheme_is_refused(
    kind: str,
    trap: Trap,
    crafted: MediaHTTPServer,
    media: MediaSet,
    media_server: MediaHTTPServer,
    tmp_path: Path,
) -> None:
    low = _serve(crafted, f"low-{kind}.m3u8", _media_playlist(media, media_server.url))
    master = _serve(crafted, f"master-{kind}.m3u8", _master(_hostile(kind, trap), low))
    _refused(_run(master, crafted, media_server, tmp_path), trap)


@pytest.mark.parametrize("kind", NESTED_KINDS)
def test_hls_segment_with_another_scheme_is_refused(
    kind: str,
    trap: Trap,
    crafted: MediaHTTPServer,
    media: MediaSet,
    media_server: MediaHTTPServer,
    tmp_path: Path,
) -> None:
    playlist = _media_playlist(media, media_server.url, first=_hostile(kind, trap))
    media_url = _serve(crafted, f"media-seg-{kind}.m3u8", playlist)
    master = _serve(crafted, f"master-seg-{kind}.m3u8", _master(media_url))
    _refused(_run(master, crafted, media_server, tmp_path), trap)


@pytest.mark.parametrize("kind", ["tcp", "concat", "data", "http"])
@pytest.mark.parametrize("where", ["key", "map", "nested-master", "rendition"])
def test_hls_nested_url_with_another_scheme_is_refused(
    where: str,
    kind: str,
    trap: Trap,
    crafted: MediaHTTPServer,
    media: MediaSet,
    media_server: MediaHTTPServer,
    tmp_path: Path,
) -> None:
    hostile = _hostile(kind, trap)
    name = f"{where}-{kind}"
    extra = ""
    if where == "key":
        playlist = _media_playlist(
            media, media_server.url, head=f'#EXT-X-KEY:METHOD=AES-128,URI="{hostile}"'
        )
        variant = _serve(crafted, f"{name}.m3u8", playlist)
    elif where == "map":
        playlist = _media_playlist(media, media_server.url, head=f'#EXT-X-MAP:URI="{hostile}"')
        variant = _serve(crafted, f"{name}.m3u8", playlist)
    elif where == "nested-master":
        # The variant yt-dlp picks is itself a master naming the trap (FFmpeg would open it).
        variant = _serve(crafted, f"{name}.m3u8", _master(hostile))
    else:
        variant = _serve(crafted, f"{name}.m3u8", _media_playlist(media, media_server.url))
        extra = f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="a",DEFAULT=YES,URI="{hostile}"\n'
    master = _serve(crafted, f"master-{name}.m3u8", _master(variant, extra=extra))
    _refused(_run(master, crafted, media_server, tmp_path), trap)


@pytest.mark.parametrize("kind", ["tcp", "ftp", "file", "http", "data", "rtmp"])
def test_redirect_to_another_scheme_is_refused(
    kind: str,
    trap: Trap,
    crafted: MediaHTTPServer,
    media_server: MediaHTTPServer,
    tmp_path: Path,
) -> None:
    url = f"{crafted.url}/_redirect?to={quote(_hostile(kind, trap), safe='')}"
    _refused(_run(url, crafted, media_server, tmp_path), trap)


def test_segment_redirect_to_another_scheme_is_refused(
    trap: Trap,
    crafted: MediaHTTPServer,
    media: MediaSet,
    media_server: MediaHTTPServer,
    tmp_path: Path,
) -> None:
    """FFmpeg follows a segment's redirect itself: to the proxy, which refuses tcp://."""
    hop = f"{crafted.url}/_redirect?to={quote(_hostile('tcp', trap), safe='')}&x=.ts"
    playlist = _media_playlist(media, media_server.url, first=hop)
    master = _serve(crafted, "master-seg-redirect.m3u8", _master(_serve(
        crafted, "seg-redirect.m3u8", playlist)))  # fmt: skip
    _refused(_run(master, crafted, media_server, tmp_path), trap)


def test_port_outside_the_allowed_ports_is_refused(
    trap: Trap, crafted: MediaHTTPServer, media_server: MediaHTTPServer, tmp_path: Path
) -> None:
    """An allowed network on a port nobody allowed: refused before connecting."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.setblocking(False)
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v.mp4"
        run = _run(url, crafted, media_server, tmp_path)
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    _refused(run, trap)


def test_scratch_is_bounded_for_a_high_bitrate_source(
    media: MediaSet, media_server: MediaHTTPServer, tmp_path: Path
) -> None:
    """The downloaded source data stops at CLIP_MAX_SCRATCH_BYTES (FFmpeg -fs) and the run
    says so, instead of filling the node's disk (before: only -t bounded the download)."""
    env = {
        "CLIP_SOURCE_URL": f"{media_server.url}/{media.faststart}",
        "CLIP_START": "10",
        "CLIP_END": "70",
        "CLIP_OUTPUT_FORMAT": "webm",  # the segment path: the source data lands in scratch
        "CLIP_ALLOW_PRIVATE_NETWORKS": "127.0.0.1/32",
        "CLIP_ALLOW_PORTS": str(media_server.server_address[1]),
        "CLIP_MAX_SCRATCH_BYTES": "300000",
        "CLIP_S3_BUCKET": "clips",
        "CLIP_S3_KEY": "never/uploaded.webm",
        "CLIP_UPLOAD_URL": "http://127.0.0.1:9/never",
    }
    run = run_worker(env, tmp_path, timeout=120)
    assert (run.returncode, run.result.get("reason")) == (2, "OutputTooLarge"), run.result
    assert "CLIP_MAX_SCRATCH_BYTES" in run.result["message"]
