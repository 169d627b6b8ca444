"""Presigned PUTs over HTTPS: the certificate is checked against the URL's host name (a
local TLS server with a throwaway certificate; versitygw covers the S3 side over HTTP)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from clip_worker.presigned import put
from clip_worker.result import Reason, WorkerError


class _Store(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Store.received.append((self.path, dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed (apt-get install openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Store)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Store.received.clear()
    try:
        yield server.server_address[1], cert
    finally:
        server.shutdown()
        server.server_close()


def test_https_put_checks_the_certificate(
    tls_server: tuple[int, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, cert = tls_server
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x" * 300_000)
    url = f"https://localhost:{port}/b/k.mp4?X-Amz-Signature=s3cr3t"
    with pytest.raises(WorkerError) as untrusted:
        put(url, {"Content-Type": "video/mp4"}, str(clip), b"", 5)
    assert untrusted.value.reason is Reason.STORAGE_UNAVAILABLE
    assert "s3cr3t" not in untrusted.value.message
    assert _Store.received == []  # nothing sent to a server that did not prove its name
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    put(url, {"Content-Type": "video/mp4"}, str(clip), b"", 5)
    path, headers, body = _Store.received[-1]
    assert path == "/b/k.mp4?X-Amz-Signature=s3cr3t"
    assert headers["Host"] == f"localhost:{port}" and headers["Content-Type"] == "video/mp4"
    assert body == clip.read_bytes()
