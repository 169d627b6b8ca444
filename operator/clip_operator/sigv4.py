"""Presigned S3 URLs (SigV4 query signing), the same URLs botocore makes, for less CPU.

botocore resolves the endpoint through its rules engine on every presign: ~1-3 ms of CPU
per URL on the bench machine, four URLs per ClipJob, the largest cost left in a ClipJob's
lifecycle (bench/RESULTS.md, issue 18). The endpoint does not change per key: botocore
signs one sample URL per (client, bucket) and this module reuses its base URL and
credential scope, signing each key itself with the client's (refreshed) credentials.
tests/unit/test_sigv4.py checks the URLs are byte-for-byte botocore's; the integration
tier checks them against an S3 server that verifies signatures.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from botocore.exceptions import NoCredentialsError

ALGORITHM = "AWS4-HMAC-SHA256"
_SAMPLE_KEY = "k"


def _q(value: str) -> str:
    return quote(value, safe="-_.~")


class Signer:
    """Presigns URLs for one boto3 S3 client (thread-safe)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._bases: dict[str, tuple[str, str, str, str]] = {}
        self._lock = threading.Lock()

    def _base(self, bucket: str) -> tuple[str, str, str, str]:
        """(URL up to the key, host, canonical path prefix, credential scope tail)."""
        found = self._bases.get(bucket)
        if found is None:
            sample = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": _SAMPLE_KEY}, ExpiresIn=60
            )
            url, _, query = str(sample).partition("?")
            if not url.endswith("/" + _SAMPLE_KEY):
                raise ValueError(f"unexpected presigned URL shape: {url}")
            prefix = url[: -len(_SAMPLE_KEY) - 1]
            parts = urlsplit(prefix)
            credential = parse_qs(query)["X-Amz-Credential"][0]
            region, service = credential.split("/")[2:4]
            host = parts.netloc  # the Host header: without the scheme's default port
            if (parts.scheme, parts.port) in (("https", 443), ("http", 80)):
                host = host.rsplit(":", 1)[0]
            found = (prefix, host, parts.path, f"{region}/{service}/aws4_request")
            with self._lock:
                self._bases[bucket] = found
        return found

    def presign(
        self,
        method: str,
        bucket: str,
        key: str,
        expires: int,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        now: datetime | None = None,
    ) -> str:
        """A presigned URL for `method` on the key; `headers` are signed (send them as is)."""
        prefix, host, base_path, scope_tail = self._base(bucket)
        creds = getattr(self.client._request_signer, "_credentials", None)
        frozen = creds.get_frozen_credentials() if creds is not None else None
        if frozen is None or not frozen.access_key or not frozen.secret_key:
            raise NoCredentialsError()
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        scope = f"{day}/{scope_tail}"
        signed = {"host": host}
        for name, value in (headers or {}).items():
            signed[name.lower()] = " ".join(value.split())
        names = sorted(signed)
        params = list((query or {}).items())
        params += [
            ("X-Amz-Algorithm", ALGORITHM),
            ("X-Amz-Credential", f"{frozen.access_key}/{scope}"),
            ("X-Amz-Date", stamp),
            ("X-Amz-Expires", str(expires)),
            ("X-Amz-SignedHeaders", ";".join(names)),
        ]
        if frozen.token:
            params.append(("X-Amz-Security-Token", frozen.token))
        encoded = [(_q(k), _q(v)) for k, v in params]
        path = quote(key, safe="/~")
        canonical = "\n".join(
            [
                method,
                f"{base_path}/{path}",
                "&".join(f"{k}={v}" for k, v in sorted(encoded)),
                "".join(f"{n}:{signed[n]}\n" for n in names),
                ";".join(names),
                "UNSIGNED-PAYLOAD",
            ]
        )
        to_sign = "\n".join(
            [ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key_bytes = ("AWS4" + frozen.secret_key).encode()
        for part in scope.split("/"):
            key_bytes = hmac.new(key_bytes, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key_bytes, to_sign.encode(), hashlib.sha256).hexdigest()
        query_string = "&".join(f"{k}={v}" for k, v in encoded)
        return f"{prefix}/{path}?{query_string}&X-Amz-Signature={signature}"
