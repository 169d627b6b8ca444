"""Unit tests of the S3 layer that need no server: clamping, settings, client config."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from clip_operator.storage import (
    MAX_PRESIGN_SECONDS,
    S3Settings,
    StorageError,
    clamp_expiry,
    client_config,
    content_disposition,
    make_client,
    presign_get,
)


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (-5, 1),
        (0, 1),
        (1, 1),
        (2, 2),
        (3600, 3600),
        (MAX_PRESIGN_SECONDS - 1, MAX_PRESIGN_SECONDS - 1),
        (MAX_PRESIGN_SECONDS, MAX_PRESIGN_SECONDS),
        (MAX_PRESIGN_SECONDS + 1, MAX_PRESIGN_SECONDS),
        (10**12, MAX_PRESIGN_SECONDS),
    ],
)
def test_clamp_expiry(requested: int, expected: int) -> None:
    assert clamp_expiry(requested) == expected


def test_max_presign_is_seven_days() -> None:
    assert MAX_PRESIGN_SECONDS == 7 * 24 * 3600


def settings(**kw: object) -> S3Settings:
    base: dict[str, object] = {
        "endpoint": "http://127.0.0.1:7070",
        "region": "eu-west-1",
        "access_key": "AKIDEXAMPLE",
        "secret_key": "secret",
    }
    base.update(kw)
    return S3Settings(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("endpoint", "style", "expected"),
    [
        ("http://127.0.0.1:7070", "auto", "path"),
        ("https://s3.example.com", "virtual", "virtual"),
        ("https://s3.example.com", "path", "path"),
        (None, "auto", "auto"),
        (None, "virtual", "virtual"),
    ],
)
def test_addressing_style(endpoint: str | None, style: str, expected: str) -> None:
    config = client_config(settings(endpoint=endpoint, addressing_style=style))
    assert config.s3 == {"addressing_style": expected}


def test_client_config_is_strict_and_bounded() -> None:
    config = client_config(settings(), timeout_seconds=7)
    assert config.signature_version == "s3v4"
    assert config.region_name == "eu-west-1"
    assert config.connect_timeout == 7
    assert config.read_timeout == 7
    assert config.retries is not None and config.retries["max_attempts"] <= 3
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"


def test_make_client_uses_endpoint_region_and_path_style() -> None:
    client = make_client(settings(endpoint="http://127.0.0.1:7070"))
    assert client.meta.endpoint_url == "http://127.0.0.1:7070"
    assert client.meta.region_name == "eu-west-1"
    # Signing is local: the URL shows path-style addressing and the settings' key.
    url = client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"})
    parts = urlsplit(url)
    assert (parts.netloc, parts.path) == ("127.0.0.1:7070", "/b/k")
    assert parse_qs(parts.query)["X-Amz-Credential"][0].startswith("AKIDEXAMPLE/")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"addressing_style": "sideways"},
        {"access_key": "only-the-key", "secret_key": None},
        {"access_key": None, "secret_key": "only-the-secret"},
        {"endpoint": "127.0.0.1:7070"},
        {"endpoint": "ftp://s3.example.com"},
    ],
)
def test_bad_settings_are_refused_with_a_message(kwargs: dict[str, object]) -> None:
    with pytest.raises(StorageError, match=r"S3 .+(;|:)"):
        settings(**kwargs)


def test_settings_repr_hides_secrets() -> None:
    text = repr(settings(secret_key="top-secret", session_token="tok-secret"))
    assert "top-secret" not in text and "tok-secret" not in text
    assert "AKIDEXAMPLE" in text


@pytest.mark.parametrize(("requested", "seconds"), [(0, 1), (60, 60), (10**9, MAX_PRESIGN_SECONDS)])
def test_presign_get_clamps_and_reports_expiry(requested: int, seconds: int) -> None:
    client = make_client(settings())
    before = datetime.now(UTC).replace(microsecond=0)
    url, expires_at = presign_get(client, "clips", "a/b.mp4", requested)
    after = datetime.now(UTC)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == [str(seconds)]
    assert expires_at.tzinfo is not None
    assert before + timedelta(seconds=seconds) <= expires_at <= after + timedelta(seconds=seconds)
    signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    # Never report a later expiry than the signature really has.
    assert expires_at <= signed + timedelta(seconds=seconds)


def test_presign_get_sets_download_filename() -> None:
    client = make_client(settings())
    url, _ = presign_get(client, "clips", "k.mp4", 60, filename='chorus "best" é.mp4')
    disposition = parse_qs(urlsplit(url).query)["response-content-disposition"][0]
    assert disposition.startswith("attachment; ")
    assert 'filename="chorus best _.mp4"' in disposition
    assert unquote(disposition.split("filename*=UTF-8''")[1]) == "chorus best é.mp4"


def test_presign_get_without_filename_has_no_disposition() -> None:
    url, _ = presign_get(make_client(settings()), "clips", "k.mp4", 60)
    assert "response-content-disposition" not in url


@pytest.mark.parametrize(
    ("name", "ascii_part"),
    [
        ("clip.mp4", 'filename="clip.mp4"'),
        ("../../etc/passwd", 'filename="....etcpasswd"'),
        ('a"\\b\n.gif', 'filename="ab.gif"'),
        ("   ", 'filename="clip"'),
    ],
)
def test_content_disposition_is_safe(name: str, ascii_part: str) -> None:
    value = content_disposition(name)
    assert ascii_part in value
    assert "\n" not in value and "\\" not in value
