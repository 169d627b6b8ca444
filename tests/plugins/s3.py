"""Pytest plugin: a real S3 server (versitygw) for the tests that need one.

`s3_server` (session) starts its own versitygw on a free 127.0.0.1 port with a temporary
root, or, when CLIP_TEST_S3_ENDPOINT is set, uses that server with CLIP_TEST_S3_ACCESS_KEY,
CLIP_TEST_S3_SECRET_KEY and CLIP_TEST_S3_REGION (`eval "$(hack/s3.sh env)"` sets them).
`s3_bucket` (function) creates a fresh, uniquely named bucket and returns its name.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
S3_SCRIPT = REPO_ROOT / "hack" / "s3.sh"
HEALTH_PATH = "/health"
START_TIMEOUT_SECONDS = 30.0
BUILD_TIMEOUT_SECONDS = 540.0
DEFAULT_ACCESS_KEY = "clipadmin"
DEFAULT_SECRET_KEY = "clipadmin-secret"
DEFAULT_REGION = "us-east-1"

# Loopback never goes through a proxy, whatever the environment says.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class S3Server:
    """A reachable S3 endpoint and its root credentials."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str

    def client(self, **overrides: Any) -> Any:
        """A boto3 S3 client for this server (path style, checksums only when required).

        Keyword overrides replace the credentials, e.g. `client(secret_key="wrong")`.
        """
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=overrides.get("access_key", self.access_key),
            aws_secret_access_key=overrides.get("secret_key", self.secret_key),
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )

    def env(self) -> dict[str, str]:
        """Environment variables the worker and the operator read for this server."""
        return {
            "CLIP_S3_ENDPOINT": self.endpoint,
            "CLIP_S3_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }


def _answers(endpoint: str) -> bool:
    try:
        with _NO_PROXY.open(endpoint + HEALTH_PATH, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _versitygw_binary() -> Path:
    """The binary from hack/s3.sh build (cached after the first build), or skip."""
    try:
        result = subprocess.run(
            ["bash", str(S3_SCRIPT), "build"],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"versitygw is not built and building it failed ({exc}): run hack/s3.sh build")
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        pytest.skip(
            f"versitygw is not built and cannot be built here: run hack/s3.sh build\n{tail}"
        )
    return Path(lines[-1])


def _start(
    binary: Path,
    root: Path,
    log_path: Path,
    port: int | None = None,
    timeout: float = START_TIMEOUT_SECONDS,
) -> tuple[subprocess.Popen[bytes], str]:
    """versitygw on 127.0.0.1 (a free port, or `port` to restart on the same one)."""
    data, sidecar = root / "data", root / "sidecar"
    data.mkdir(parents=True, exist_ok=True)
    sidecar.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "ROOT_ACCESS_KEY": DEFAULT_ACCESS_KEY,
        "ROOT_SECRET_KEY": DEFAULT_SECRET_KEY,
    }
    port = port or _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                str(binary),
                "--port",
                f"127.0.0.1:{port}",
                "--region",
                DEFAULT_REGION,
                "--health",
                HEALTH_PATH,
                "posix",
                "--sidecar",
                str(sidecar),
                str(data),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if _answers(endpoint):
            return proc, endpoint
        time.sleep(0.1)
    _stop(proc)
    log_tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
    raise RuntimeError(f"versitygw did not start on {endpoint}; log {log_path}:\n{log_tail}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server: an external one (CLIP_TEST_S3_ENDPOINT) or our own versitygw."""
    external = os.environ.get("CLIP_TEST_S3_ENDPOINT")
    if external:
        server = S3Server(
            endpoint=external.rstrip("/"),
            access_key=os.environ.get("CLIP_TEST_S3_ACCESS_KEY", DEFAULT_ACCESS_KEY),
            secret_key=os.environ.get("CLIP_TEST_S3_SECRET_KEY", DEFAULT_SECRET_KEY),
            region=os.environ.get("CLIP_TEST_S3_REGION", DEFAULT_REGION),
        )
        yield server
        return
    binary = _versitygw_binary()
    root = tmp_path_factory.mktemp("versitygw")
    try:
        proc, endpoint = _start(binary, root, root / "versitygw.log")
    except RuntimeError:
        # A free port can be taken between probing and binding it: one more try.
        proc, endpoint = _start(binary, root, root / "versitygw.log")
    try:
        yield S3Server(endpoint, DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, DEFAULT_REGION)
    finally:
        _stop(proc)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A new empty bucket with a unique name; emptied and removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    client = s3_server.client()
    client.create_bucket(Bucket=name)
    yield name
    try:
        listed = client.list_objects_v2(Bucket=name).get("Contents", [])
        for obj in listed:
            client.delete_object(Bucket=name, Key=obj["Key"])
        client.delete_bucket(Bucket=name)
    except Exception as exc:  # cleanup must not mask the test's own result
        print(f"s3_bucket cleanup of {name} failed: {exc}")
