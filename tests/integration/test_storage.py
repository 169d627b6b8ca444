"""The S3 layer against a real, signature-checking S3 server (versitygw)."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from botocore.exceptions import ClientError

from clip_operator.storage import (
    MAX_PRESIGN_SECONDS,
    S3Settings,
    StorageError,
    delete_object,
    make_client,
    presign_get,
)
from tests.plugins.s3 import S3Server

pytestmark = pytest.mark.integration

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
BODY = b"\x00clip bytes\xff" * 1000


def fetch(url: str) -> tuple[int, bytes, dict[str, str]]:
    """Plain HTTP GET, as a browser or curl would do with the presigned URL."""
    try:
        with _NO_PROXY.open(url, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def settings_for(server: S3Server, **kw: str) -> S3Settings:
    return S3Settings(
        endpoint=kw.get("endpoint", server.endpoint),
        region=server.region,
        access_key=kw.get("access_key", server.access_key),
        secret_key=kw.get("secret_key", server.secret_key),
    )


@pytest.fixture
def stored(s3_server: S3Server, s3_bucket: str) -> tuple[str, str]:
    key = "media/chorus-3f9a1c.mp4"
    s3_server.client().put_object(Bucket=s3_bucket, Key=key, Body=BODY, ContentType="video/mp4")
    return s3_bucket, key


def replace_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_presigned_url_downloads_the_object(s3_server: S3Server, stored: tuple[str, str]) -> None:
    bucket, key = stored
    client = make_client(settings_for(s3_server))
    url, expires_at = presign_get(client, bucket, key, 300, filename="chorus.mp4")
    status, body, headers = fetch(url)
    assert status == 200
    assert body == BODY
    assert headers["Content-Disposition"].startswith('attachment; filename="chorus.mp4"')
    assert 290 <= (expires_at - datetime.now(UTC)).total_seconds() <= 300


def test_longest_lifetime_is_accepted_by_the_server(
    s3_server: S3Server, stored: tuple[str, str]
) -> None:
    # Asking for more than 7 days must still give a working URL (clamped, not refused).
    bucket, key = stored
    url, _ = presign_get(
        make_client(settings_for(s3_server)), bucket, key, 10 * MAX_PRESIGN_SECONDS
    )
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == [str(MAX_PRESIGN_SECONDS)]
    assert fetch(url)[0] == 200


def test_tampered_urls_are_refused(s3_server: S3Server, stored: tuple[str, str]) -> None:
    bucket, key = stored
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="media/other.mp4", Body=b"someone else's clip")
    url, _ = presign_get(make_client(settings_for(s3_server)), bucket, key, 300)
    assert fetch(url)[0] == 200

    other_key = url.replace("/chorus-3f9a1c.mp4?", "/other.mp4?")
    assert other_key != url
    assert fetch(other_key)[0] == 403

    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    assert fetch(replace_query(url, **{"X-Amz-Signature": flipped}))[0] == 403

    longer = replace_query(url, **{"X-Amz-Expires": "600"})
    assert fetch(longer)[0] == 403


def test_url_signed_with_a_wrong_secret_is_refused(
    s3_server: S3Server, stored: tuple[str, str]
) -> None:
    bucket, key = stored
    wrong = make_client(settings_for(s3_server, secret_key="not-the-secret"))
    url, _ = presign_get(wrong, bucket, key, 300)
    assert fetch(url)[0] == 403


def test_expired_url_is_refused(s3_server: S3Server, stored: tuple[str, str]) -> None:
    bucket, key = stored
    url, expires_at = presign_get(make_client(settings_for(s3_server)), bucket, key, 2)
    status, _, _ = fetch(url)
    if (expires_at - datetime.now(UTC)).total_seconds() > 0.5:
        assert status == 200
    # Wait just past the expiry (bounded: at most ~4 s), then the same URL must fail.
    remaining = (expires_at - datetime.now(UTC)).total_seconds()
    time.sleep(max(0.0, min(remaining, 3.0)) + 1.2)
    status, body, _ = fetch(url)
    assert status == 403
    assert b"expired" in body.lower()


def test_delete_object_is_idempotent(s3_server: S3Server, stored: tuple[str, str]) -> None:
    bucket, key = stored
    raw = s3_server.client()
    client = make_client(settings_for(s3_server))
    assert raw.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(BODY)

    assert delete_object(client, bucket, key) is True
    with pytest.raises(ClientError) as gone:
        raw.head_object(Bucket=bucket, Key=key)
    assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    assert delete_object(client, bucket, key) is True
    assert delete_object(client, f"{bucket}-missing", key) is True


@pytest.mark.parametrize(
    "creds",
    [{"secret_key": "not-the-secret"}, {"access_key": "nobody", "secret_key": "nothing"}],
)
def test_wrong_credentials_raise_storage_error(
    s3_server: S3Server, stored: tuple[str, str], creds: dict[str, str]
) -> None:
    bucket, key = stored
    client = make_client(settings_for(s3_server, **creds))
    with pytest.raises(StorageError, match="credentials") as err:
        delete_object(client, bucket, key)
    assert err.value.retryable is False
    assert f"s3://{bucket}/{key}" in str(err.value)
    # Nothing was deleted by the refused request.
    assert s3_server.client().head_object(Bucket=bucket, Key=key)["ContentLength"] == len(BODY)


def test_unreachable_endpoint_raises_retryable_storage_error(s3_server: S3Server) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port is closed now: connections are refused at once.
    client = make_client(
        settings_for(s3_server, endpoint=f"http://127.0.0.1:{port}"), timeout_seconds=2
    )
    started = time.monotonic()
    with pytest.raises(StorageError, match="cannot reach the S3 endpoint") as err:
        delete_object(client, "clips", "k.mp4")
    assert err.value.retryable is True
    assert time.monotonic() - started < 30
