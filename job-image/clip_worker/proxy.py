"""A local egress proxy for yt-dlp and FFmpeg: checks, pins and counts every connection.

yt-dlp and FFmpeg follow redirects and fetch HLS segments from hosts the worker never
sees. Both honour an HTTP proxy, so the worker runs this one on 127.0.0.1 and points
them at it: each request (plain HTTP) or tunnel (HTTPS CONNECT) names its target host,
which is resolved once, refused unless every address is allowed (netguard), and then
connected to by the checked address. The bytes received from upstream are counted,
which is the worker's `bytesFetched`.

The proxy also serves documents the worker vetted and pinned (HLS playlists, see
resolve.py) at `http://127.0.0.1:<port>/_pinned/<token>`, so FFmpeg reads the exact
copy that was checked, not a second answer from the source.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from clip_worker.config import DEFAULT_ALLOW_PORTS, Network
from clip_worker.netguard import REFUSED, Refused, resolve_checked
from clip_worker.result import Reason, WorkerError

log = logging.getLogger("clip_worker")

_MAX_HEAD = 64 * 1024
_CHUNK = 16 * 1024
# A small receive buffer keeps the proxy from reading far ahead of its client, so
# bytes a client never asked for are not pulled from the source.
_UPSTREAM_RCVBUF = 32 * 1024
_CLIENT_SNDBUF = 16 * 1024
_HOP_HEADERS = {b"connection", b"proxy-connection", b"keep-alive", b"proxy-authorization"}


@dataclass
class ProxyLog:
    """What the proxy saw; read by the worker after yt-dlp or FFmpeg failed."""

    bytes_received: int = 0
    connections: int = 0
    refusals: list[str] = field(default_factory=list)  # the generic message, once per refusal
    refusal_details: list[str] = field(default_factory=list)  # why, for the debug log only
    upstream_errors: list[str] = field(default_factory=list)
    statuses: list[tuple[str, int]] = field(default_factory=list)
    hosts: set[str] = field(default_factory=set)


def _read_head(sock: socket.socket, first: bytes = b"") -> tuple[bytes, bytes]:
    """Read until the blank line ending an HTTP head; return (head, bytes after it)."""
    data = first
    while b"\r\n\r\n" not in data:
        if len(data) > _MAX_HEAD:
            raise ValueError("HTTP head too large")
        chunk = sock.recv(_CHUNK)
        if not chunk:
            raise ValueError("connection closed inside an HTTP head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _headers(head: bytes) -> list[tuple[bytes, bytes]]:
    lines = head.split(b"\r\n")[1:]
    out = []
    for line in lines:
        if b":" in line:
            name, _, value = line.partition(b":")
            out.append((name.strip(), value.strip()))
    return out


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _http_location(location: str) -> bool:
    """A redirect target that stays http(s): relative, or with an http(s) scheme."""
    scheme, colon, _ = location.partition(":")
    relative = not colon or any(c in scheme for c in "/?#")
    return relative or scheme.lower() in ("http", "https")


class EgressProxy:
    """Threaded HTTP/CONNECT proxy bound to 127.0.0.1 on a free port."""

    def __init__(
        self,
        allow: tuple[Network, ...],
        timeout: float,
        ports: tuple[int, ...] = DEFAULT_ALLOW_PORTS,
    ) -> None:
        self.allow = allow
        self.timeout = timeout
        self.ports = ports
        self.log = ProxyLog()
        self._pinned: dict[str, tuple[bytes, str]] = {}
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="egress", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    def __enter__(self) -> EgressProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._thread.join(timeout=5)

    def pin(self, body: bytes, content_type: str, suffix: str = "") -> str:
        """Serve `body` at a fresh unguessable URL on this proxy; return the URL."""
        token = secrets.token_urlsafe(16) + suffix
        with self._lock:
            self._pinned[token] = (body, content_type)
        return f"{self.url}/_pinned/{token}"

    def _pinned_target(self, target: str) -> str | None:
        """The token when `target` names one of our pinned documents."""
        parts = urlsplit(target)
        if parts.scheme:
            own = self._server.getsockname()
            if parts.hostname != own[0] or parts.port != own[1]:
                return None
        if not parts.path.startswith("/_pinned/"):
            return None
        return parts.path.removeprefix("/_pinned/")

    def _serve_pinned(self, client: socket.socket, token: str, method: str) -> None:
        with self._lock:
            doc = self._pinned.get(token)
        if doc is None:
            self._reply(client, 404, "not found")
            return
        body, content_type = doc
        client.sendall(
            f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + (b"" if method.upper() == "HEAD" else body)
        )

    def bytes_received(self) -> int:
        with self._lock:
            return self.log.bytes_received

    def _count(self, n: int) -> None:
        with self._lock:
            self.log.bytes_received += n

    def _note(self, bucket: list[str], message: str) -> None:
        with self._lock:
            if len(bucket) < 50:
                bucket.append(message)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self.log.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _connect(self, host: str, port: int) -> socket.socket:
        """Resolve, check and connect to the checked address (raises WorkerError)."""
        addresses = resolve_checked(host, port, self.allow, self.timeout, self.ports)
        with self._lock:
            self.log.hosts.add(host)
        last: OSError | None = None
        for address, addr_port in addresses:
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            upstream = socket.socket(family, socket.SOCK_STREAM)
            upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UPSTREAM_RCVBUF)
            upstream.settimeout(self.timeout)
            try:
                upstream.connect((str(address), addr_port))
                return upstream
            except OSError as exc:
                upstream.close()
                last = exc
        raise WorkerError(Reason.NETWORK_ERROR, f"cannot connect to {host}:{port}: {last}")

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(self.timeout)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _CLIENT_SNDBUF)
        upstream: socket.socket | None = None
        try:
            head, rest = _read_head(client)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method.upper() == "CONNECT":
                host, _, port = target.rpartition(":")
                upstream = self._guarded(client, host.strip("[]"), int(port or 443), target)
                if upstream is None:
                    return
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self._tunnel(client, upstream, rest, target)
            elif (token := self._pinned_target(target)) is not None:
                self._serve_pinned(client, token, method)
            else:
                parts = urlsplit(target)
                if parts.scheme and parts.scheme != "http":
                    # e.g. FFmpeg following a redirect to tcp://, ftp://...: never connected.
                    self._note(self.log.refusals, REFUSED)
                    self._note(self.log.refusal_details, f"{parts.scheme}: URL via the proxy")
                    self._reply(client, 403, "refused by clip-worker egress policy", refused=True)
                    return
                if parts.scheme != "http" or not parts.hostname:
                    self._reply(client, 400, "proxy takes absolute http:// URLs or CONNECT")
                    return
                upstream = self._guarded(client, parts.hostname, parts.port or 80, target)
                if upstream is None:
                    return
                self._forward(client, upstream, method, target, head, rest)
        except (OSError, ValueError):
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()

    def _guarded(
        self, client: socket.socket, host: str, port: int, target: str
    ) -> socket.socket | None:
        try:
            return self._connect(host, port)
        except Refused as exc:
            self._note(self.log.refusals, REFUSED)
            self._note(self.log.refusal_details, exc.detail)
            log.debug("egress refused %s: %s", target[:200], exc.detail)
            self._reply(client, 403, "refused by clip-worker egress policy", refused=True)
            return None
        except WorkerError as exc:
            if exc.reason is Reason.FORBIDDEN_ADDRESS:
                self._note(self.log.refusals, REFUSED)
                self._reply(client, 403, "refused by clip-worker egress policy", refused=True)
            else:
                self._note(self.log.upstream_errors, exc.message)
                self._reply(client, 502, "upstream unreachable")
            return None

    @staticmethod
    def _reply(client: socket.socket, status: int, text: str, refused: bool = False) -> None:
        body = text.encode()
        extra = "X-Clip-Refused: 1\r\n" if refused else ""
        client.sendall(
            f"HTTP/1.1 {status} {text}\r\nContent-Type: text/plain\r\n{extra}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )

    def _forward(
        self,
        client: socket.socket,
        upstream: socket.socket,
        method: str,
        target: str,
        head: bytes,
        rest: bytes,
    ) -> None:
        parts = urlsplit(target)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = [(k, v) for k, v in _headers(head) if k.lower() not in _HOP_HEADERS]
        if _header(headers, b"host") is None:
            headers.insert(0, (b"Host", (parts.netloc or "").encode()))
        lines = [f"{method} {path} HTTP/1.1".encode()]
        lines += [k + b": " + v for k, v in headers] + [b"Connection: close", b"", b""]
        upstream.sendall(b"\r\n".join(lines))
        length = int(_header(headers, b"content-length") or b"0")
        body = rest[:length]
        if body:
            upstream.sendall(body)
        remaining = length - len(body)
        while remaining > 0:
            chunk = client.recv(min(_CHUNK, remaining))
            if not chunk:
                return
            upstream.sendall(chunk)
            remaining -= len(chunk)

        try:
            resp_head, resp_rest = _read_head(upstream)
        except (TimeoutError, ConnectionError) as exc:
            self._upstream_failed(target, exc)
            raise
        self._count(len(resp_head) + len(resp_rest))
        status_line = resp_head.split(b"\r\n", 1)[0].decode("latin-1")
        status = int(status_line.split(" ", 2)[1])
        with self._lock:
            if len(self.log.statuses) < 500:
                self.log.statuses.append((target[:300], status))
        resp_headers = [(k, v) for k, v in _headers(resp_head) if k.lower() not in _HOP_HEADERS]
        location = (_header(resp_headers, b"location") or b"").decode("latin-1")
        if 300 <= status < 400 and location and not _http_location(location):
            # FFmpeg would fail on it, but say so as the refusal it is.
            self._note(self.log.refusals, REFUSED)
            self._note(self.log.refusal_details, "a redirect to a non-http(s) URL")
            self._reply(client, 403, "refused by clip-worker egress policy", refused=True)
            return
        out = [status_line.encode()] + [k + b": " + v for k, v in resp_headers]
        client.sendall(b"\r\n".join([*out, b"Connection: close", b"", b""]))
        if method.upper() == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return
        declared = _header(resp_headers, b"content-length")
        remaining = int(declared) - len(resp_rest) if declared is not None else -1
        if resp_rest:
            client.sendall(resp_rest)
        relayed = len(resp_rest)
        try:
            while remaining != 0:
                try:
                    chunk = upstream.recv(_CHUNK if remaining < 0 else min(_CHUNK, remaining))
                except (TimeoutError, ConnectionError) as exc:
                    self._upstream_failed(target, exc)
                    raise
                if not chunk:
                    return
                self._count(len(chunk))
                relayed += len(chunk)
                client.sendall(chunk)
                if remaining > 0:
                    remaining -= len(chunk)
        finally:
            ranged = _header(headers, b"range") or b""
            log.debug("egress %s %s [%s] -> %d, %d body bytes", method, target[:120],
                      ranged.decode("latin-1"), status, relayed)  # fmt: skip

    def _upstream_failed(self, target: str, exc: OSError) -> None:
        """Record a stall or reset of the source: closing the client's socket alone would
        look like the end of the file to FFmpeg (a transient failure taken for a short one)."""
        where = urlsplit(target).netloc or target.split("/", 1)[0]
        if isinstance(exc, TimeoutError):
            message = f"timed out: the source {where} sent nothing for {self.timeout:g} s"
        else:
            message = f"the connection to the source {where} broke: {exc}"
        self._note(self.log.upstream_errors, message)

    def _tunnel(
        self, client: socket.socket, upstream: socket.socket, rest: bytes, target: str = ""
    ) -> None:
        if rest:
            upstream.sendall(rest)

        def pump_up() -> None:
            try:
                while chunk := client.recv(_CHUNK):
                    upstream.sendall(chunk)
            except OSError:
                pass
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=pump_up, daemon=True)
        sender.start()
        try:
            while True:
                try:
                    chunk = upstream.recv(_CHUNK)
                except (TimeoutError, ConnectionError) as exc:
                    self._upstream_failed(target, exc)
                    break
                if not chunk:
                    break
                self._count(len(chunk))
                client.sendall(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)
        sender.join(timeout=self.timeout)
