"""Presigned uploads (the operator's contract, job-image/README.md): plain HTTP PUTs.

The operator presigns a PUT for the exact clip key (CLIP_UPLOAD_URL, with the headers it
signed in CLIP_UPLOAD_HEADERS) and one for the result object (CLIP_RESULT_URL); the
worker holds no S3 credentials. The upload host is the operator's choice (its endpoint
or one from its allow-list), so the worker connects to exactly that host and port,
whatever address it resolves to, with no proxy and no redirects followed.

A presigned query string is a credential: messages and logs name the URL without it.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import BinaryIO
from urllib.parse import urlsplit

from clip_worker.config import Config
from clip_worker.netguard import Address, lookup
from clip_worker.probe import Made
from clip_worker.result import Reason, WorkerError

log = logging.getLogger("clip_worker")

ATTEMPTS = 3
BACKOFF_SECONDS = 0.5
_CHUNK = 256 * 1024
# A PUT begun before the output check holds back this much of the body until it passed.
HELD_BYTES = 64 * 1024
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
    url: str,
    headers: Mapping[str, str],
    body: BinaryIO,
    length: int,
    timeout: float,
    gate: Callable[[], bool] | None = None,
) -> bool:
    """One PUT. With `gate`, the last HELD_BYTES of the body wait until gate() returns:
    True sends them, False closes the connection with the body short, which S3 never
    stores (a PUT is all or nothing). Returns whether the object was stored."""
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
            early = max(0, length - HELD_BYTES) if gate is not None else length
            sent = 0
            while sent < early and (chunk := body.read(min(_CHUNK, early - sent))):
                conn.send(chunk)
                sent += len(chunk)
            if gate is not None and not gate():
                return False  # closed below with the body short: nothing is stored
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
        return True
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


def _clip_headers(cfg: Config, content_type: str, disposition: str) -> dict[str, str]:
    """Exactly the signed headers, with defaults only for the unsigned ones."""
    headers = dict(cfg.upload_headers)
    names = {k.lower() for k in headers}
    if "content-type" not in names:
        headers["Content-Type"] = content_type
    if "content-disposition" not in names:
        headers["Content-Disposition"] = disposition
    return headers


def put_clip(cfg: Config, path: str, content_type: str, disposition: str) -> None:
    """PUT the clip with exactly the signed headers (defaults only for the unsigned ones)."""
    assert cfg.upload_url is not None
    headers = _clip_headers(cfg, content_type, disposition)
    put(cfg.upload_url, headers, path, b"", cfg.network_timeout)


def _md5(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode("ascii")


class HeldPut:
    """The clip's PUT, begun while the output check decodes the clip: all of the body but
    its last HELD_BYTES goes at once, the rest only after the check passed (`finish`).
    `abort` closes the connection with the body short. The request carries the body's
    Content-MD5, which S3 checks: a short body never matches, so nothing is stored (a
    store that kept what it got, as versitygw does without it, keeps nothing either); a
    clip that fails its check is never uploaded. Whatever went wrong with the early
    attempt, `finish` falls back to the ordinary PUT (3 attempts): it costs only time."""

    def __init__(self, cfg: Config, path: str, content_type: str, disposition: str) -> None:
        assert cfg.upload_url is not None
        self.cfg = cfg
        self.path = path
        self.headers = _clip_headers(cfg, content_type, disposition)
        self._decided = threading.Event()
        self._send = False
        self._stored = False
        self._problem = ""
        self._thread = threading.Thread(target=self._run, name="held-put", daemon=True)
        self._thread.start()
        log.debug("upload begun during the output check: %s", redact(cfg.upload_url))

    def _gate(self) -> bool:
        self._decided.wait()
        return self._send

    def _run(self) -> None:
        assert self.cfg.upload_url is not None
        try:
            headers = dict(self.headers)
            if not any(k.lower() == "content-md5" for k in headers):
                headers["Content-MD5"] = _md5(self.path)
            with open(self.path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                self._stored = _put_once(self.cfg.upload_url, headers, handle, size,
                                         self.cfg.network_timeout, self._gate)  # fmt: skip
        except WorkerError as exc:
            self._problem = exc.message
        except Exception as exc:  # never lost: finish() tries the ordinary PUT
            self._problem = f"{type(exc).__name__}: {exc}"

    def finish(self) -> None:
        """The clip passed its check: complete the PUT (or make it again)."""
        self._send = True
        self._decided.set()
        self._thread.join(self.cfg.network_timeout + 5)
        if self._stored:
            return
        log.info("the early upload did not complete (%s); uploading again", self._problem)
        assert self.cfg.upload_url is not None
        put(self.cfg.upload_url, self.headers, self.path, b"", self.cfg.network_timeout)

    def abort(self) -> None:
        """The clip failed its check: end the PUT short (nothing is stored)."""
        if self._decided.is_set():
            return  # finished (or aborted) already
        self._send = False
        self._decided.set()
        self._thread.join(self.cfg.network_timeout + 5)
        log.debug("the clip's upload ended short: nothing stored")


def put_result(cfg: Config, text: str) -> None:
    """PUT the success result JSON beside the clip (the operator reads it when the Job is gone)."""
    assert cfg.result_url is not None
    headers = {"Content-Type": "application/json"}
    put(cfg.result_url, headers, None, text.encode(), cfg.network_timeout)


# Begins the clip's upload (presigned) while the output check runs; None: upload later.
EarlyUpload = Callable[[str], HeldPut] | None


def checked(
    path: str, early: EarlyUpload, check: Callable[[], Made]
) -> tuple[Made, HeldPut | None]:
    """Run the output check `check` of the clip at `path` with its upload begun beside it;
    the upload is ended short (nothing stored) when the check or anything in it fails."""
    held = early(path) if early is not None else None
    try:
        return check(), held
    except BaseException:
        if held is not None:
            held.abort()
        raise
