"""Presigned uploads (issue 12, the operator <-> worker contract in job-image/README.md): the
worker holds no S3 keys; it PUTs the clip and its result to URLs presigned the way the
operator does, against a real S3 server (versitygw checks signatures and expiry)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.mediaserver import MediaHTTPServer
from tests.plugins.media import MediaSet, WorkerRun, run_worker
from tests.plugins.s3 import S3Server

pytestmark = pytest.mark.integration

KEY = "tenant/clips/chorus.mp4"
HEADERS = {
    "Content-Type": "video/mp4",
    "Content-Disposition": "attachment; filename=\"chorus.mp4\"; filename*=UTF-8''chorus.mp4",
}


def _presign(server: S3Server, bucket: str, key: str, expires: int = 600, **params: str) -> str:
    """What the operator does: a PUT URL for the exact key with the signed headers."""
    url: str = server.client().generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": key, **params}, ExpiresIn=expires
    )
    return url


def _clip_url(server: S3Server, bucket: str, expires: int = 600) -> str:
    return _presign(
        server, bucket, KEY, expires, ContentType=HEADERS["Content-Type"],
        ContentDisposition=HEADERS["Content-Disposition"],
    )  # fmt: skip


def _result_url(server: S3Server, bucket: str) -> str:
    return _presign(server, bucket, KEY + ".result.json", ContentType="application/json")


def _run(
    media: MediaSet, media_server: MediaHTTPServer, tmp: Path, bucket: str, upload_url: str,
    result_url: str | None = None, extra: dict[str, str] | None = None,
) -> WorkerRun:  # fmt: skip
    env = {
        "CLIP_SOURCE_URL": f"{media_server.url}/{media.faststart}",
        "CLIP_START": "10",
        "CLIP_END": "12",
        "CLIP_OUTPUT_FORMAT": "mp4",
        "CLIP_MODE": "fast",
        "CLIP_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
        "CLIP_ALLOW_PORTS": str(media_server.server_address[1]),
        "CLIP_NETWORK_TIMEOUT_SECONDS": "5",
        "CLIP_S3_BUCKET": bucket,
        "CLIP_S3_KEY": KEY,
        "CLIP_UPLOAD_URL": upload_url,
        "CLIP_UPLOAD_HEADERS": json.dumps(HEADERS),
        # No HOME with ~/.aws either: the worker has nothing to sign with.
        "HOME": str(tmp),
    }
    if result_url:
        env["CLIP_RESULT_URL"] = result_url
    env.update(extra or {})
    tmp.mkdir(parents=True, exist_ok=True)
    run = run_worker(env, tmp, timeout=180)
    # run_worker drops AWS_* from the inherited environment and this test sets none.
    assert not any(k.startswith("AWS_") for k in env)
    for secret in _secrets(upload_url) + _secrets(result_url or ""):
        assert secret not in run.stderr, "a presigned query string reached the log"
        assert secret not in json.dumps(run.result), "a presigned query string reached status"
    return run


def _secrets(url: str) -> list[str]:
    """The signature and the credential scope: never in a message or a log line."""
    query = url.partition("?")[2]
    pairs = dict(p.partition("=")[::2] for p in query.split("&") if p)
    return [v for k, v in pairs.items() if k in ("X-Amz-Signature", "X-Amz-Credential") and v]


def _objects(server: S3Server, bucket: str) -> list[str]:
    listed = server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(o["Key"] for o in listed)


def test_presigned_upload_puts_clip_and_result_without_credentials(
    media: MediaSet, media_server: MediaHTTPServer, s3_server: S3Server, s3_bucket: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    run = _run(media, media_server, tmp_path, s3_bucket, _clip_url(s3_server, s3_bucket),
               _result_url(s3_server, s3_bucket))  # fmt: skip
    assert run.returncode == 0, f"{run.result} {run.stderr[-2000:]}"
    client = s3_server.client()
    obj = client.get_object(Bucket=s3_bucket, Key=KEY)
    body = obj["Body"].read()
    assert obj["ContentType"] == HEADERS["Content-Type"]
    assert obj["ContentDisposition"] == HEADERS["Content-Disposition"]
    assert len(body) == run.result["sizeBytes"] == obj["ContentLength"]
    assert body[4:8] == b"ftyp"  # an MP4, whole
    stored = client.get_object(Bucket=s3_bucket, Key=KEY + ".result.json")
    assert stored["ContentType"] == "application/json"
    assert json.loads(stored["Body"].read()) == run.result  # the termination message, durable
    assert run.result["bucket"] == s3_bucket and run.result["key"] == KEY


def test_expired_url_is_storage_auth_failed(
    media: MediaSet, media_server: MediaHTTPServer, s3_server: S3Server, s3_bucket: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    url = _clip_url(s3_server, s3_bucket, expires=1)
    issued = time.time()
    deadline = issued + 10
    while time.time() < issued + 2.5 and time.time() < deadline:  # until it has expired
        time.sleep(0.1)
    run = _run(media, media_server, tmp_path, s3_bucket, url)
    assert (run.returncode, run.result["reason"]) == (2, "StorageAuthFailed"), run.result
    assert "403" in run.result["message"] and "?" not in run.result["message"]
    assert _objects(s3_server, s3_bucket) == []


def test_wrong_signature_is_storage_auth_failed(
    media: MediaSet, media_server: MediaHTTPServer, s3_server: S3Server, s3_bucket: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    url = _clip_url(s3_server, s3_bucket)
    signature = _secrets(url)[-1] if "X-Amz-Signature" in url else ""
    assert signature
    forged = url.replace(signature, signature[::-1])
    run = _run(media, media_server, tmp_path, s3_bucket, forged)
    assert (run.returncode, run.result["reason"]) == (2, "StorageAuthFailed"), run.result
    assert "SignatureDoesNotMatch" in run.result["message"]
    assert _objects(s3_server, s3_bucket) == []


def test_headers_other_than_signed_are_refused(
    media: MediaSet, media_server: MediaHTTPServer, s3_server: S3Server, s3_bucket: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The URL signs Content-Type video/webm; the worker sends what it was given (mp4)."""
    url = _presign(s3_server, s3_bucket, KEY, ContentType="video/webm",
                   ContentDisposition=HEADERS["Content-Disposition"])  # fmt: skip
    run = _run(media, media_server, tmp_path, s3_bucket, url)
    assert (run.returncode, run.result["reason"]) == (2, "StorageAuthFailed"), run.result


def test_missing_bucket_is_bucket_not_found(
    media: MediaSet, media_server: MediaHTTPServer, s3_server: S3Server, s3_bucket: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    missing = s3_bucket + "-gone"
    run = _run(media, media_server, tmp_path, missing, _clip_url(s3_server, missing))
    assert (run.returncode, run.result["reason"]) == (2, "StorageBucketNotFound"), run.result


def test_s3_down_is_storage_unavailable(
    media: MediaSet, media_server: MediaHTTPServer, s3_server: S3Server, s3_bucket: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    url = _clip_url(s3_server, s3_bucket).replace(s3_server.endpoint, f"http://127.0.0.1:{port}")
    run = _run(media, media_server, tmp_path, s3_bucket, url)
    assert (run.returncode, run.result["reason"]) == (1, "StorageUnavailable"), run.result
    assert f"127.0.0.1:{port}/{s3_bucket}/{KEY}" in run.result["message"]
    assert "?" not in run.result["message"]


def test_result_put_failure_is_reported(
    media: MediaSet, media_server: MediaHTTPServer, s3_server: S3Server, s3_bucket: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The durable result must exist when the Job reports success: a refused result PUT
    fails the run (the retry overwrites the same clip key: nothing duplicated)."""
    bad: Any = _result_url(s3_server, s3_bucket).replace("X-Amz-Signature=", "X-Amz-Signature=0")
    run = _run(media, media_server, tmp_path, s3_bucket, _clip_url(s3_server, s3_bucket), bad)
    assert (run.returncode, run.result["reason"]) == (2, "StorageAuthFailed"), run.result
    assert ".result.json" in run.result["message"]


def test_upload_host_is_allowed_for_the_upload_only(
    media: MediaSet, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """S3 on 127.0.0.1 is outside the allowed source networks (127.0.0.3/32 only): the
    upload reaches it, because the operator chose that host; a source naming it does not."""
    server = MediaHTTPServer(media.root, "127.0.0.3", 0)
    server.start()
    try:
        env_net = {"CLIP_ALLOW_PRIVATE_NETWORKS": "127.0.0.3/32"}
        run = _run(media, server, tmp_path / "ok", s3_bucket, _clip_url(s3_server, s3_bucket),
                   extra=env_net)  # fmt: skip
        assert run.returncode == 0, f"{run.result} {run.stderr[-1500:]}"
        assert _objects(s3_server, s3_bucket) == [KEY]
        s3_port = s3_server.endpoint.rsplit(":", 1)[1]
        sneaky = {**env_net, "CLIP_ALLOW_PORTS": f"{server.server_address[1]},{s3_port}",
                  "CLIP_SOURCE_URL": f"{s3_server.endpoint}/{s3_bucket}/{KEY}"}  # fmt: skip
        refused = _run(media, server, tmp_path / "no", s3_bucket,
                       _clip_url(s3_server, s3_bucket), extra=sneaky)  # fmt: skip
        assert (refused.returncode, refused.result["reason"]) == (2, "ForbiddenAddress")
    finally:
        server.shutdown()
        server.server_close()


def test_progress_is_put_beside_the_clip_through_its_presigned_url(
    media: MediaSet, media_server: MediaHTTPServer, s3_server: S3Server, s3_bucket: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    progress = _presign(
        s3_server, s3_bucket, KEY + ".progress.json", ContentType="application/json"
    )
    run = _run(media, media_server, tmp_path, s3_bucket, _clip_url(s3_server, s3_bucket),
               _result_url(s3_server, s3_bucket),
               {"CLIP_PROGRESS_URL": progress, "CLIP_PROGRESS_EVERY": "1"})  # fmt: skip
    assert run.returncode == 0, f"{run.result} {run.stderr[-2000:]}"
    assert progress.partition("?")[2].split("X-Amz-Signature=")[-1] not in run.stderr
    stored = s3_server.client().get_object(Bucket=s3_bucket, Key=KEY + ".progress.json")
    report = json.loads(stored["Body"].read())
    assert report["phase"] in ("Resolving", "Downloading", "Encoding", "Uploading")
    assert report["percent"] in (0, 5, 45, 90) and report["updatedAt"].endswith("Z")


# ---- issue 18: the upload begins while the clip is checked ------------------------------


def _config(url: str) -> Any:
    from clip_worker import config

    return config.load({
        "CLIP_SOURCE_URL": "https://example.com/v.mp4", "CLIP_START": "0", "CLIP_END": "2",
        "CLIP_S3_BUCKET": "b", "CLIP_S3_KEY": KEY, "CLIP_UPLOAD_URL": url,
        "CLIP_UPLOAD_HEADERS": json.dumps(HEADERS), "CLIP_NETWORK_TIMEOUT_SECONDS": "5",
    })  # fmt: skip


@pytest.mark.parametrize("size", [1000, 3 * 1024 * 1024 + 17])
def test_held_upload_stores_the_clip_only_once_finished(
    size: int, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """The PUT begun during the output check sends all but its last bytes; aborted (the
    check failed), S3 stores nothing (versitygw keeps a short body unless its Content-MD5
    fails: found by this test); finished, the object is the whole file."""
    from clip_worker.presigned import HeldPut

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    cfg = _config(_clip_url(s3_server, s3_bucket))
    held = HeldPut(cfg, str(clip), HEADERS["Content-Type"], HEADERS["Content-Disposition"])
    held.abort()
    assert _objects(s3_server, s3_bucket) == []
    held = HeldPut(cfg, str(clip), HEADERS["Content-Type"], HEADERS["Content-Disposition"])
    held.finish()
    obj = s3_server.client().get_object(Bucket=s3_bucket, Key=KEY)
    assert obj["Body"].read() == clip.read_bytes()
    assert obj["ContentType"] == HEADERS["Content-Type"]


def test_held_upload_that_failed_early_is_made_again(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """Nothing is lost when the early attempt breaks (here: S3 was not there yet): the
    ordinary PUT follows once the check passed."""
    from clip_worker.presigned import HeldPut

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 200_000)
    url = _clip_url(s3_server, s3_bucket)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    held = HeldPut(_config(url.replace(s3_server.endpoint, f"http://127.0.0.1:{port}")),
                   str(clip), HEADERS["Content-Type"], HEADERS["Content-Disposition"])  # fmt: skip
    held._thread.join(10)  # the early attempt has failed
    held.cfg = _config(url)  # S3 is back by the time the check passed
    held.finish()
    assert s3_server.client().get_object(Bucket=s3_bucket, Key=KEY)["ContentLength"] == 200_000


def test_a_clip_failing_its_check_is_not_stored_although_its_upload_began(
    shapes: Any, shapes_server: MediaHTTPServer, s3_server: S3Server, s3_bucket: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Fast mode on a source whose data does not decode: the copy's upload begins during
    its check, the check fails, the upload ends short; the segment path fails too. S3 has
    nothing, and the run is the named failure."""
    env = {
        "CLIP_SOURCE_URL": f"{shapes_server.url}/{shapes.corrupt}", "CLIP_START": "20",
        "CLIP_END": "22", "CLIP_OUTPUT_FORMAT": "mp4", "CLIP_MODE": "fast",
        "CLIP_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
        "CLIP_ALLOW_PORTS": str(shapes_server.server_address[1]),
        "CLIP_S3_BUCKET": s3_bucket, "CLIP_S3_KEY": KEY, "HOME": str(tmp_path),
        "CLIP_UPLOAD_URL": _clip_url(s3_server, s3_bucket),
        "CLIP_UPLOAD_HEADERS": json.dumps(HEADERS), "CLIP_DEBUG": "1",
    }  # fmt: skip
    run = run_worker(env, tmp_path)
    assert (run.returncode, run.result["reason"]) == (2, "UnsupportedSource"), run.result
    assert "upload begun during the output check" in run.stderr
    assert "upload ended short" in run.stderr
    assert _objects(s3_server, s3_bucket) == []
