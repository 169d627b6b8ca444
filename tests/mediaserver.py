"""A threaded, range-capable HTTP server over a directory that counts what it serves.

Used by the worker tests, bench/clip and the e2e demo:

    python -m tests.mediaserver DIR --port 8089 --bind 127.0.0.1

Serves files with `Range` (single ranges, 206 + Content-Range, 416), `HEAD`,
`Content-Length` and media content types (so HLS renditions play), and a few special
paths tests need:

- `/_status/<code>`: answers with that status (404, 403, 410, 500...)
- `/_page.html`: an HTML page with no video in it
- `/_redirect?to=<url>`: 302 to `to`
- `/_stall?seconds=N`: sends nothing for N seconds (at most 60), then closes
- `/_stats`: JSON {path: {"bytes": n, "requests": n}}; `/_stats/reset` clears it

Byte counts are body bytes handed to the socket, in 16 KiB writes. The send buffer is kept
small (32 KiB) so the count stays close to what a client that hangs up mid-body read;
that also caps throughput (delayed ACKs), so `send_buffer=None` is there for bulk downloads.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import re
import socket
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

CHUNK = 16 * 1024
SEND_BUFFER = 32 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_TYPES = {
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".mp3": "audio/mpeg",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


class Stats:
    """Bytes and requests per path, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes: dict[str, int] = defaultdict(int)
        self._requests: dict[str, int] = defaultdict(int)

    def request(self, path: str) -> None:
        with self._lock:
            self._requests[path] += 1

    def sent(self, path: str, n: int) -> None:
        with self._lock:
            self._bytes[path] += n

    def bytes(self, path: str | None = None) -> int:
        """Body bytes served for one path (with leading '/'), or for all paths."""
        with self._lock:
            return self._bytes.get(path, 0) if path else sum(self._bytes.values())

    def requests(self, path: str | None = None) -> int:
        with self._lock:
            return self._requests.get(path, 0) if path else sum(self._requests.values())

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            paths = set(self._bytes) | set(self._requests)
            return {p: {"bytes": self._bytes[p], "requests": self._requests[p]} for p in paths}

    def reset(self) -> None:
        with self._lock:
            self._bytes.clear()
            self._requests.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: MediaHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def setup(self) -> None:
        super().setup()
        if self.server.send_buffer:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.server.send_buffer)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _simple(self, status: int, body: bytes, content_type: str, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)
            self.server.stats.sent(urlsplit(self.path).path, len(body))

    def _serve(self, head: bool) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        self.server.stats.request(path)
        if path.startswith("/_status/"):
            code = int(path.rsplit("/", 1)[1] or 500)
            self._simple(code, f"status {code}\n".encode(), "text/plain", head)
        elif path == "/_page.html":
            page = b"<!doctype html><html><head><title>No video here</title></head>"
            page += b"<body><p>Just text, no video.</p></body></html>\n"
            self._simple(200, page, "text/html; charset=utf-8", head)
        elif path == "/_redirect":
            target = parse_qs(parts.query).get("to", [""])[0]
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/_stall":
            seconds = min(60.0, float(parse_qs(parts.query).get("seconds", ["30"])[0]))
            self.server.stalled.wait(seconds)
            self.close_connection = True
        elif path.startswith("/_stats"):
            if path == "/_stats/reset":
                self.server.stats.reset()
            body = json.dumps(self.server.stats.snapshot()).encode()
            self._simple(200, body, "application/json", head)
        else:
            self._file(path, head)

    def _file(self, path: str, head: bool) -> None:
        root = self.server.root
        target = (root / path.lstrip("/")).resolve()
        if root not in target.parents or not target.is_file():
            self._simple(404, b"not found\n", "text/plain", head)
            return
        size = target.stat().st_size
        start, end = 0, size - 1
        status = 200
        header = self.headers.get("Range")
        if header:
            match = _RANGE.match(header.strip())
            if not match or (not match.group(1) and not match.group(2)):
                self._simple(416, b"bad range\n", "text/plain", head)
                return
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:
                start = max(0, size - int(match.group(2)))
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        ctype = _TYPES.get(target.suffix.lower()) or (
            mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        )
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            return
        with open(target, "rb") as handle:
            handle.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = handle.read(min(CHUNK, remaining))
                if not chunk:
                    break
                try:
                    self.wfile.write(chunk)
                except OSError:  # the client hung up (or TLS closed) mid-body
                    self.close_connection = True
                    return
                self.server.stats.sent(path, len(chunk))
                remaining -= len(chunk)


class MediaHTTPServer(ThreadingHTTPServer):
    """The server; `.stats` holds the counts, `.url` the base URL."""

    daemon_threads = True

    def __init__(self, root: str | os.PathLike[str], bind: str = "127.0.0.1", port: int = 0,
                 verbose: bool = False, send_buffer: int | None = SEND_BUFFER) -> None:  # fmt: skip
        self.root = Path(root).resolve()
        self.stats = Stats()
        self.verbose = verbose
        # None: the kernel's autotuned buffer (full speed; counts include what sat in it).
        self.send_buffer = send_buffer
        self.stalled = threading.Event()  # set it to release stalled requests early
        super().__init__((bind, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def shutdown(self) -> None:
        self.stalled.set()
        super().shutdown()

    def start(self) -> threading.Thread:
        """Serve in a daemon thread (stop with `shutdown()` then `server_close()`)."""
        thread = threading.Thread(target=self.serve_forever, name="mediaserver", daemon=True)
        thread.start()
        return thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    server = MediaHTTPServer(args.directory, args.bind, args.port, args.verbose)
    print(f"serving {server.root} on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
