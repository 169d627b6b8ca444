"""Servers the fault tier controls: an S3 it can stop and restart, a denying webhook.

- `StoppableS3`: a versitygw of its own on a fixed 127.0.0.1 port and data directory, so
  that stopping it is "S3 down" and starting it again is "S3 back" at the same address
  (presigned URLs stay valid).
- `AdmissionWebhook`: an HTTPS admission webhook on 127.0.0.1 with a fresh self-signed CA
  that refuses every request with a fixed message, or allows it after a callback.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import signal
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.plugins.s3 import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_REGION,
    DEFAULT_SECRET_KEY,
    S3Server,
    _free_port,
    _start,
    _stop,
    _versitygw_binary,
)

DENY_MESSAGE = "clip-faults policy: Jobs are not allowed in this namespace"


class StoppableS3:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.binary = _versitygw_binary()
        self.port = _free_port()
        self.server = S3Server(
            f"http://127.0.0.1:{self.port}", DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, DEFAULT_REGION
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        """(Re)start versitygw on the same port and data, so URLs and objects survive."""
        self.proc, _ = _start(
            self.binary, self.root, self.root / "versitygw.log", port=self.port, timeout=timeout
        )

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def pause(self) -> None:
        """SIGSTOP: connections are still accepted (backlog) but nothing is answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


def connections_to(pid: int, port: int) -> set[str]:
    """Socket inodes of process `pid`'s established TCP connections to port `port`."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == port and fields[3] == "01" and fields[9] in inodes:  # ESTABLISHED
            found.add(fields[9])
    return found


def _self_signed(directory: Path) -> tuple[Path, Path, bytes]:
    """A CA and a server certificate for IP 127.0.0.1: (cert, key, CA PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clip-faults-webhook-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, ca.public_bytes(serialization.Encoding.PEM)


class _Review(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        review = json.loads(self.rfile.read(length) or b"{}")
        request = review.get("request") or {}
        hook: AdmissionWebhook = self.server.hook  # type: ignore[attr-defined]
        hook.requests += 1
        if hook.on_request is not None:
            hook.on_request(request)
        response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": hook.allow}
        if not hook.allow:
            response["status"] = {"code": 403, "message": DENY_MESSAGE}
        body = json.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class AdmissionWebhook:
    """A validating webhook over HTTPS on 127.0.0.1 that denies everything (`allow=False`,
    with DENY_MESSAGE) or allows everything, calling `on_request(request)` first."""

    def __init__(
        self, allow: bool = False, on_request: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.allow, self.on_request, self.requests = allow, on_request, 0
        self.tmp = tempfile.TemporaryDirectory(prefix="clip-faults-webhook-")
        cert, key, self.ca_pem = _self_signed(Path(self.tmp.name))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Review)
        self.httpd.hook = self  # type: ignore[attr-defined]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/review"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> AdmissionWebhook:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.tmp.cleanup()

    def configuration(self, name: str, namespace: str) -> dict[str, Any]:
        """A ValidatingWebhookConfiguration for Job creates in `namespace`, failing closed."""
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": "jobs.faults.mememaker.io",
                    "clientConfig": {
                        "url": self.url,
                        "caBundle": base64.b64encode(self.ca_pem).decode(),
                    },
                    "rules": [
                        {
                            "apiGroups": ["batch"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["jobs"],
                        }
                    ],
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}
                    },
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 10,
                }
            ],
        }
