"""Thin S3 layer of the operator: a client, presigned GET URLs, and object deletion.

Synchronous boto3 on purpose: handlers run these calls in a worker thread. Every failure
a user can cause (wrong keys, unreachable endpoint, missing bucket) surfaces as a
`StorageError` whose message says what failed and what to do.
"""

from __future__ import annotations

import re
import threading
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from .sigv4 import Signer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# SigV4 presigned URLs live at most 7 days; S3 rejects longer ones and boto3 does not clamp.
MAX_PRESIGN_SECONDS = 604800
MIN_PRESIGN_SECONDS = 1
ADDRESSING_STYLES = ("auto", "path", "virtual")
AddressingStyle = Literal["auto", "path", "virtual"]
# Few retries: handlers are retried by kopf, so a long boto3 retry loop only hides outages.
MAX_ATTEMPTS = 3

_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
        "InvalidClientTokenId",
        # versitygw's answer (HTTP 404) for an access key it does not know.
        "XAdminUserNotFound",
        "401",
        "403",
    }
)
_ABSENT_CODES = frozenset({"NoSuchKey", "NotFound", "404", "NoSuchBucket"})


class StorageError(Exception):
    """An S3 operation failed; the message says what failed and what to do.

    `retryable` is True for failures that may pass by themselves (network, server errors)
    and False for ones that need a change (credentials, permissions, settings).
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class S3Settings:
    """Where and as whom to reach S3; `endpoint` None means AWS itself."""

    endpoint: str | None
    region: str
    access_key: str | None
    secret_key: str | None
    session_token: str | None = None
    # "auto" means path-style when an endpoint is set (self-hosted stores), else boto3's choice.
    addressing_style: str = "auto"

    def __post_init__(self) -> None:
        if self.addressing_style not in ADDRESSING_STYLES:
            raise StorageError(
                f"S3 addressing style {self.addressing_style!r} is not one of "
                f"{', '.join(ADDRESSING_STYLES)}; fix the storage settings"
            )
        if (self.access_key is None) != (self.secret_key is None):
            raise StorageError(
                "S3 credentials are incomplete: an access key and a secret key must be given "
                "together (or neither, to use the default credential chain such as IRSA)"
            )
        if self.endpoint is not None and not re.match(r"^https?://[^/\s]+", self.endpoint):
            raise StorageError(
                f"S3 endpoint {self.endpoint!r} is not an http(s) URL; "
                "give it as e.g. https://s3.example.com or http://127.0.0.1:7070"
            )

    @property
    def effective_addressing_style(self) -> AddressingStyle:
        """The addressing style boto3 gets: path for custom endpoints unless told otherwise."""
        if self.addressing_style == "auto" and self.endpoint is not None:
            return "path"
        return cast(AddressingStyle, self.addressing_style)

    def __repr__(self) -> str:
        # Keep secrets out of logs and tracebacks.
        return (
            f"S3Settings(endpoint={self.endpoint!r}, region={self.region!r}, "
            f"access_key={self.access_key!r}, secret_key={'***' if self.secret_key else None}, "
            f"session_token={'***' if self.session_token else None}, "
            f"addressing_style={self.addressing_style!r})"
        )


def client_config(settings: S3Settings, timeout_seconds: float = 10) -> Config:
    """The botocore Config `make_client` uses (separate so it can be checked without a server)."""
    return Config(
        region_name=settings.region,
        signature_version="s3v4",
        s3={"addressing_style": settings.effective_addressing_style},
        connect_timeout=timeout_seconds,
        read_timeout=timeout_seconds,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        # boto3 >= 1.36 adds CRC checksums by default, which several S3-compatible stores refuse.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def make_client(settings: S3Settings, timeout_seconds: float = 10) -> S3Client:
    """A boto3 S3 client for these settings (own session: safe to build per tenant)."""
    session = boto3.session.Session(
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        aws_session_token=settings.session_token,
        region_name=settings.region,
    )
    return session.client(
        "s3",
        endpoint_url=settings.endpoint,
        config=client_config(settings, timeout_seconds),
    )


_signers: weakref.WeakKeyDictionary[Any, Signer] = weakref.WeakKeyDictionary()
_signers_lock = threading.Lock()


def _signer(client: S3Client) -> Signer:
    """The client's URL signer (sigv4.py: botocore's URLs without its per-URL endpoint
    resolution), made once per client."""
    found = _signers.get(client)
    if found is None:
        with _signers_lock:
            found = _signers.setdefault(client, Signer(client))
    return found


def clamp_expiry(seconds: int) -> int:
    """Clamp a presigned-URL lifetime into [1, 604800] seconds (SigV4's 7-day cap)."""
    return max(MIN_PRESIGN_SECONDS, min(MAX_PRESIGN_SECONDS, int(seconds)))


def content_disposition(filename: str) -> str:
    """An `attachment` Content-Disposition with an ASCII fallback and an RFC 5987 UTF-8 name."""
    cleaned = "".join(ch for ch in filename if ch.isprintable() and ch not in '"\\/')
    cleaned = cleaned.strip() or "clip"
    ascii_name = cleaned.encode("ascii", "replace").decode("ascii").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(cleaned, safe='')}"


def presign_get(
    client: S3Client,
    bucket: str,
    key: str,
    expires_seconds: int,
    filename: str | None = None,
) -> tuple[str, datetime]:
    """A presigned GET URL for the object and the UTC time it stops working.

    The lifetime is clamped into [1, 604800]. Signing happens locally (no request is sent),
    so a missing object is not detected here. URLs signed with temporary credentials
    (IRSA, STS) stop working when those credentials expire, whatever the lifetime.
    """
    seconds = clamp_expiry(expires_seconds)
    # X-Amz-Date has whole seconds and is taken after this: never report a later expiry.
    signed_at = datetime.now(UTC).replace(microsecond=0)
    query = {"response-content-disposition": content_disposition(filename)} if filename else None
    try:
        url = _signer(client).presign("GET", bucket, key, seconds, None, query, signed_at)
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise StorageError(
            f"cannot sign a download URL for s3://{bucket}/{key}: no S3 credentials ({exc}); "
            "set the storage Secret (access key and secret key) or the operator's credentials"
        ) from exc
    except BotoCoreError as exc:
        raise StorageError(
            f"cannot sign a download URL for s3://{bucket}/{key}: {exc}; check the storage settings"
        ) from exc
    return url, signed_at + timedelta(seconds=seconds)


def delete_object(client: S3Client, bucket: str, key: str) -> bool:
    """Delete the object; True once it is gone (deleted now or already absent).

    Idempotent: a missing object or bucket counts as deleted. Raises StorageError
    (with `retryable` set for network and server failures) when the store cannot be
    reached or refuses the request.
    """
    where = f"s3://{bucket}/{key}"
    try:
        client.delete_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code, status = _error_code(exc)
        if code in _ABSENT_CODES:
            return True
        raise _client_error(f"deleting {where}", exc, code, status) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise StorageError(
            f"deleting {where} failed: no S3 credentials ({exc}); "
            "set the storage Secret (access key and secret key) or the operator's credentials"
        ) from exc
    except (EndpointConnectionError, ConnectionError) as exc:
        raise StorageError(
            f"deleting {where} failed: cannot reach the S3 endpoint ({exc}); "
            "check the endpoint setting and that the store is up",
            retryable=True,
        ) from exc
    except BotoCoreError as exc:
        raise StorageError(f"deleting {where} failed: {exc}", retryable=True) from exc
    return True


def _error_code(exc: ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {})
    meta = exc.response.get("ResponseMetadata", {})
    return str(error.get("Code", "")), int(meta.get("HTTPStatusCode", 0))


def _client_error(action: str, exc: ClientError, code: str, status: int) -> StorageError:
    if code in _AUTH_CODES or status in (401, 403):
        return StorageError(
            f"{action} failed: S3 refused the credentials or permissions ({code or status}); "
            "check the access key, secret key and the bucket policy for s3:DeleteObject"
        )
    if status >= 500 or code in {"SlowDown", "ServiceUnavailable", "InternalError"}:
        return StorageError(
            f"{action} failed: the S3 store had a server error ({code or status}); it will be "
            "retried, and if it persists check the store's health",
            retryable=True,
        )
    return StorageError(f"{action} failed: S3 answered {code or status}: {exc}")


def presign_put(
    client: S3Client, bucket: str, key: str, expires_seconds: int, headers: dict[str, str]
) -> str:
    """A presigned PUT URL for exactly this key; `headers` are signed and must be sent as is."""
    names = ("Content-Type", "Content-Disposition")
    signed: dict[str, str] = {k: headers[k] for k in names if k in headers}
    try:
        return _signer(client).presign("PUT", bucket, key, clamp_expiry(expires_seconds), signed)
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise StorageError(
            f"cannot sign the upload to s3://{bucket}/{key}: no S3 credentials ({exc}); "
            "set the storage Secret (access key and secret key) or the operator's credentials"
        ) from exc
    except BotoCoreError as exc:
        raise StorageError(f"cannot sign the upload to s3://{bucket}/{key}: {exc}") from exc


def read_json_object(client: S3Client, bucket: str, key: str, limit: int = 64 * 1024) -> Any:
    """The JSON document stored at the key, or None when there is no such object."""
    import json

    where = f"s3://{bucket}/{key}"
    try:
        resp = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{limit - 1}")
        data = resp["Body"].read(limit)
    except ClientError as exc:
        code, status = _error_code(exc)
        if code in _ABSENT_CODES or status == 404:
            return None
        raise _client_error(f"reading {where}", exc, code, status) from exc
    except (EndpointConnectionError, ConnectionError) as exc:
        raise StorageError(
            f"reading {where} failed: cannot reach the S3 endpoint ({exc})", retryable=True
        ) from exc
    except BotoCoreError as exc:
        raise StorageError(f"reading {where} failed: {exc}", retryable=True) from exc
    try:
        return json.loads(data)
    except ValueError:
        return None


def credential_expiry(client: S3Client) -> datetime | None:
    """When the client's credentials expire (temporary ones: STS, IRSA), else None."""
    signer = getattr(client, "_request_signer", None)
    creds = getattr(signer, "_credentials", None)
    expiry = getattr(creds, "_expiry_time", None)
    if isinstance(expiry, datetime):
        return expiry.astimezone(UTC)
    return None
