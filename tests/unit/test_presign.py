"""Presigned URLs tell the truth about their life (issue 11, symptom 8)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from botocore.credentials import RefreshableCredentials

from clip_operator.builders import ClipJobRef
from clip_operator.config import load_config
from clip_operator.models import parse_spec
from clip_operator.presign import Presigner
from clip_operator.status import parse_time
from clip_operator.storage import S3Settings, make_client

SPEC = {"source": {"url": "http://e.test/v.mp4"}, "start": "0", "end": "10"}


def presigner_with(expiry: datetime | None, monkeypatch: pytest.MonkeyPatch) -> Presigner:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    config = load_config({"CLIP_OPERATOR_S3_ENDPOINT": "http://127.0.0.1:7070"})
    presigner = Presigner(None, config)  # type: ignore[arg-type]
    settings = S3Settings("http://127.0.0.1:7070", "us-east-1", "AKIDEXAMPLE", "secret", None)
    client = make_client(settings)
    if expiry is not None:  # what IRSA/STS sessions look like to botocore
        client._request_signer._credentials = RefreshableCredentials(
            "ASIAEXAMPLE", "secret", "token", expiry, lambda: {}, "sts"
        )
    presigner._clients[settings] = client
    return presigner


def sign(presigner: Presigner, seconds: int) -> tuple[datetime, datetime, str]:
    spec = parse_spec({**SPEC, "urlExpiresSeconds": seconds})
    ref = ClipJobRef("a", "ns", "u1")
    url, expires, issued = asyncio.run(presigner.presign_get(ref, spec, "clips", "ns/a.mp4"))
    e, i = parse_time(expires), parse_time(issued)
    assert e and i
    return e, i, url


def test_url_expiry_is_cut_to_the_credentials_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    session_end = datetime.now(UTC) + timedelta(minutes=40)
    expires, issued, url = sign(presigner_with(session_end, monkeypatch), 7 * 86400)
    assert abs((expires - session_end).total_seconds()) <= 1, "not the 7 days asked for"
    lifetime = int(url.split("X-Amz-Expires=")[1].split("&")[0])
    assert abs(lifetime - (expires - issued).total_seconds()) <= 1  # the URL agrees


def test_static_keys_give_the_requested_lifetime(monkeypatch: pytest.MonkeyPatch) -> None:
    expires, issued, _ = sign(presigner_with(None, monkeypatch), 3600)
    assert (expires - issued).total_seconds() == 3600
