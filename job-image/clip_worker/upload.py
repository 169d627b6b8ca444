"""Upload the clip to S3 and map storage errors to reasons.

Two ways: presigned (the operator's contract, CLIP_UPLOAD_URL: plain HTTP PUTs, no
credentials, no boto3; presigned.py) or the legacy boto3 path (CLIP_S3_ENDPOINT and
AWS_* keys; multipart for large files) for standalone use.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any
from urllib.parse import quote

from clip_worker import presigned
from clip_worker.config import Config
from clip_worker.result import Reason, WorkerError

MULTIPART_THRESHOLD = 16 * 1024 * 1024
MULTIPART_CHUNK = 16 * 1024 * 1024

_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "AuthorizationHeaderMalformed",
    "InvalidClientTokenId",
    "403",
    "401",
}
_BUCKET_CODES = {"NoSuchBucket", "404"}


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback name and the exact UTF-8 name (RFC 6266)."""
    folded = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    fallback = re.sub(r"[^A-Za-z0-9._ -]+", "_", folded)
    fallback = re.sub(r"\s+", " ", fallback).strip() or "clip"
    encoded = quote(filename, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def client_config(cfg: Config) -> Any:
    """botocore Config: timeouts, few retries, path style, checksums only when required."""
    from botocore.config import Config as BotoConfig

    return BotoConfig(
        region_name=cfg.s3_region,
        connect_timeout=cfg.network_timeout,
        read_timeout=cfg.network_timeout,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": cfg.s3_addressing_style},  # type: ignore[arg-type]
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def _error_code(exc: BaseException) -> str | None:
    from botocore.exceptions import ClientError

    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return None
        if isinstance(seen, ClientError):
            error = seen.response.get("Error", {})
            status = seen.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return str(error.get("Code") or status or "")
        seen = seen.__cause__ or seen.__context__
    return None


def classify(exc: BaseException, cfg: Config) -> WorkerError:
    """Storage failure -> reason: bad credentials are permanent, unreachable is transient."""
    from botocore.exceptions import (
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    where = f"s3://{cfg.s3_bucket}/{cfg.s3_key}" + (
        f" at {cfg.s3_endpoint}" if cfg.s3_endpoint else ""
    )
    if isinstance(exc, NoCredentialsError):
        return WorkerError(Reason.STORAGE_AUTH_FAILED, f"no S3 credentials for {where}")
    code = _error_code(exc)
    if code in _AUTH_CODES:
        return WorkerError(
            Reason.STORAGE_AUTH_FAILED,
            f"S3 refused the credentials for {where} ({code}); check the storage Secret",
        )
    if code in _BUCKET_CODES:
        return WorkerError(
            Reason.STORAGE_BUCKET_NOT_FOUND, f"bucket {cfg.s3_bucket!r} does not exist ({where})"
        )
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 6:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    unreachable = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
                   ConnectionClosedError, ConnectionError, TimeoutError)  # fmt: skip
    if any(isinstance(e, unreachable) for e in chain):
        return WorkerError(Reason.STORAGE_UNAVAILABLE, f"S3 is unreachable for {where}: {exc}")
    return WorkerError(Reason.STORAGE_UNAVAILABLE, f"uploading to {where} failed: {exc}")


def make_client(cfg: Config) -> Any:
    """The S3 client (importing boto3 takes a while: the worker does it during the download).

    None for presigned uploads: those need no client, and building one would look for
    credentials (instance metadata included).
    """
    if cfg.presigned:
        return None
    import boto3

    session = boto3.session.Session()
    return session.client(
        "s3", endpoint_url=cfg.s3_endpoint, config=client_config(cfg), region_name=cfg.s3_region
    )


def upload(
    cfg: Config,
    path: str,
    content_type: str,
    filename: str,
    client: Any | None = None,
    held: presigned.HeldPut | None = None,
) -> None:
    """Upload `path` to the configured bucket and key (`held`: the PUT begun during the
    output check, completed now)."""
    if cfg.presigned:
        if held is not None:
            held.finish()
            return
        presigned.put_clip(cfg, path, content_type, content_disposition(filename))
        return
    from boto3.s3.transfer import TransferConfig

    try:
        client = client or make_client(cfg)
    except Exception as exc:
        raise classify(exc, cfg) from None
    transfer = TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD,
        multipart_chunksize=MULTIPART_CHUNK,
        max_concurrency=4,
        use_threads=True,
    )
    extra = {"ContentType": content_type, "ContentDisposition": content_disposition(filename)}
    try:
        client.upload_file(path, cfg.s3_bucket, cfg.s3_key, ExtraArgs=extra, Config=transfer)
    except Exception as exc:
        raise classify(exc, cfg) from None


def put_result(cfg: Config, text: str) -> None:
    """Store the success result beside the clip (CLIP_RESULT_URL), when presigned."""
    if cfg.presigned and cfg.result_url:
        presigned.put_result(cfg, text)
