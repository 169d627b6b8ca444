"""Presigned uploads (the operator's contract, job-image/README.md): plain HTTP PUTs.

The operator presigns a PUT for the exact clip key (CLIP_UPLOAD_URL, with the headers it
signed in CLIP_UPLOAD_HEADERS) and one for the result object (CLIP_RESULT_URL); the
worker holds no S3 credentials. The upload host is the operator's choice (its endpoint
or one from its allow-list), so the worker connects to exactly that host and port,
whatever address it resolves to, with no proxy and no redirects followed.

A presigned query string is a credential: messages and logs name the URL without it.
"""

from __future__ import annotations

import http.client
import io
import logging
import os
import re
import socket
import ssl
import time
from collections.abc import Mapping
from typing import BinaryIO
from urllib.parse import urlsplit

from clip_worker.config import Config
from clip_worker.netguard import Address, lookup
from clip_worker.result import Reason, WorkerError

log = logging.getLogger("clip_worker")

ATTEMPTS = 3
BACKOFF_SECONDS = 0.5
_CHUNK = 256 * 1024
_ERROR_BODY = 64 * 1024
_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")


def redact(url: str) -> str:
    """The URL without its query string, fragment or user info (those can be credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _connect_any(addresses: list[Address], port: int, timeout: float) -> socket.socket:
    last: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((str(address), port), timeout=timeout)
        except OSError as exc:
            last = exc
    raise last or OSError("no address to connect to")


class _Connection(http.client.HTTPConnection):
    """HTTP to the addresses resolved (with a bounded lookup) for the URL's host."""

    def __init__(self, host: str, port: int, timeout: float, addresses: list[Address]) -> None:
        super().__init__(host, port, timeout=timeout)
        self.addresses = addresses

    def connect(self) -> None:
        self.sock = _connect_any(self.addresses, self.port, self.timeout or 30)


class _TLSConnection(http.client.HTTPSConnection):
    """HTTPS likewise; the certificate is checked against the URL's host name."""

    def __init__(self, host: str, port: int, timeout: float, addresses: list[Address]) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.addresses = addresses

    def connect(self) -> None:
        sock = _connect_any(self.addresses, self.port, self.timeout or 30)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _classify(status: int, body: bytes, where: str) -> WorkerError:
    match = _CODE.search(body)
    code = match.group(1).decode("ascii", "replace") if match else ""
    named = f"HTTP {status}" + (f" {code}" if code else "")
    if status >= 500 or code == "SlowDown":
        return WorkerError(Reason.STORAGE_UNAVAILABLE, f"S3 answered {named} for {where}")
    if status == 403:
        return WorkerError(
            Reason.STORAGE_AUTH_FAILED,
            f"S3 refused the presigned upload to {where} ({named}): the URL expired, its "
            "signature does not match, or the operator's credentials lack access",
        )
    if status == 404 and code == "NoSuchBucket":
        return WorkerError(
            Reason.STORAGE_BUCKET_NOT_FOUND, f"the bucket of {where} does not exist ({named})"
        )
    return WorkerError(Reason.STORAGE_AUTH_FAILED, f"S3 refused the upload to {where} ({named})")


def _put_once(
    url: str, headers: Mapping[str, str], body: BinaryIO, length: int, timeout: float
) -> None:
    parts = urlsplit(url)
    where = redact(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = lookup(host, port, timeout)
    kind = _TLSConnection if parts.scheme == "https" else _Connection
    conn = kind(host, port, timeout, addresses)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.connect()
        unsent: OSError | None = None
        try:
            conn.putrequest("PUT", target, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(length))
            conn.endheaders()
            while chunk := body.read(_CHUNK):
                conn.send(chunk)
        except OSError as exc:
            # S3 may answer (403...) and close before the body is sent: read that answer.
            unsent = exc
        try:
            response = conn.getresponse()
        except (OSError, http.client.HTTPException):
            if unsent is not None:
                raise unsent from None
            raise
        status = response.status
        data = response.read(_ERROR_BODY) if status >= 300 else b""
        if status >= 300:
            raise _classify(status, data, where)
        response.read()
    except WorkerError:
        raise
    except TimeoutError:
        raise WorkerError(
            Reason.STORAGE_UNAVAILABLE, f"S3 did not answer within {timeout:g} s for {where}"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        detail = type(exc).__name__
        if isinstance(exc, OSError) and exc.strerror:
            detail += f": {exc.strerror}"
        raise WorkerError(
            Reason.STORAGE_UNAVAILABLE, f"S3 is unreachable at {where} ({detail})"
        ) from None
    finally:
        conn.close()


def put(
    url: str, headers: Mapping[str, str], path: str | None, data: bytes, timeout: float
) -> None:
    """PUT a file (`path`) or `data` to a presigned URL; transient failures tried 3 times."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            if path is not None:
                with open(path, "rb") as handle:
                    _put_once(url, headers, handle, os.fstat(handle.fileno()).st_size, timeout)
            else:
                _put_once(url, headers, io.BytesIO(data), len(data), timeout)
            return
        except WorkerError as exc:
            if exc.reason is Reason.TIMEOUT:  # the bounded lookup of the S3 host
                exc = WorkerError(Reason.STORAGE_UNAVAILABLE, exc.message)
            if exc.reason is not Reason.STORAGE_UNAVAILABLE or attempt == ATTEMPTS:
                raise exc from None
            log.warning("upload attempt %d failed (%s); retrying", attempt, exc.message)
            time.sleep(BACKOFF_SECONDS * attempt)


def put_clip(cfg: Config, path: str, content_type: str, disposition: str) -> None:
    """PUT the clip with exactly the signed headers (defaults only for the unsigned ones)."""
    assert cfg.upload_url is not None
    headers = dict(cfg.upload_headers)
    names = {k.lower() for k in headers}
    if "content-type" not in names:
        headers["Content-Type"] = content_type
    if "content-disposition" not in names:
        headers["Content-Disposition"] = disposition
    put(cfg.upload_url, headers, path, b"", cfg.network_timeout)


def put_result(cfg: Config, text: str) -> None:
    """PUT the success result JSON beside the clip (the operator reads it when the Job is gone)."""
    assert cfg.result_url is not None
    headers = {"Content-Type": "application/json"}
    put(cfg.result_url, headers, None, text.encode(), cfg.network_timeout)
