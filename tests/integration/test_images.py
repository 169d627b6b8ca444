"""The container images as a cluster runs them: the job image cuts a real clip into a real
S3 server under the Pod's restricted security context; the operator image starts.

Needs docker: with no daemon answering, the session starts dockerd itself (hack/images.sh
docker) and stops it afterwards. The images are (re)built through hack/images.sh, which
caches (minutes cold, seconds warm); CLIP_TEST_REUSE_IMAGES=1 uses them as they are.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.mediaserver import MediaHTTPServer
from tests.plugins.media import MediaSet, ffprobe_json, media_duration
from tests.plugins.s3 import S3Server

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_SCRIPT = REPO_ROOT / "hack" / "images.sh"
JOB_IMAGE = os.environ.get("CLIP_JOB_IMAGE", "clip-job:dev")
OPERATOR_IMAGE = os.environ.get("CLIP_OPERATOR_IMAGE", "clip-operator:dev")
NONROOT = "65532:65532"


def _docker_cli() -> str | None:
    """A docker CLI whose daemon answers, or None."""
    for cli in ("docker", "/usr/bin/docker"):
        path = shutil.which(cli)
        if not path:
            continue
        try:
            if subprocess.run([path, "info"], capture_output=True, timeout=30).returncode == 0:
                return path
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


@pytest.fixture(scope="session")
def docker() -> Iterator[str]:
    """A docker CLI with a daemon; starts dockerd (hack/images.sh docker) if none answers
    and dockerd is installed, and stops that one, by its PID, at the end of the session."""
    cli = _docker_cli()
    if cli is not None:
        yield cli
        return
    if shutil.which("dockerd") is None:
        pytest.skip("docker is not installed: run hack/images.sh (installs and starts dockerd)")
    out = subprocess.run(
        ["bash", str(IMAGES_SCRIPT), "docker"], capture_output=True, text=True, timeout=180
    )
    cli = _docker_cli()
    if out.returncode != 0 or cli is None:
        pytest.skip(f"dockerd does not start here: run hack/images.sh\n{out.stderr[-1500:]}")
    try:
        yield cli
    finally:
        subprocess.run(["bash", str(IMAGES_SCRIPT), "stop"], capture_output=True, timeout=120)


def _ensure_image(docker: str, step: str, tag: str) -> str:
    if os.environ.get("CLIP_TEST_REUSE_IMAGES") == "1":
        if subprocess.run([docker, "image", "inspect", tag], capture_output=True).returncode:
            pytest.skip(f"{tag} is not built: run hack/images.sh")
        return tag
    for part in ("base", step):
        out = subprocess.run(
            ["bash", str(IMAGES_SCRIPT), part], capture_output=True, text=True, timeout=1500
        )
        assert out.returncode == 0, f"hack/images.sh {part} failed:\n{out.stderr[-3000:]}"
    return tag


@pytest.fixture(scope="session")
def job_image(docker: str) -> str:
    return _ensure_image(docker, "job", JOB_IMAGE)


@pytest.fixture(scope="session")
def operator_image(docker: str) -> str:
    return _ensure_image(docker, "operator", OPERATOR_IMAGE)


def _inspect(docker: str, tag: str) -> dict[str, Any]:
    out = subprocess.run(
        [docker, "image", "inspect", tag], capture_output=True, text=True, check=True
    )
    config: dict[str, Any] = json.loads(out.stdout)[0]["Config"]
    return config


def run_job(
    docker: str, image: str, env: Mapping[str, str], out_dir: Path, timeout: float = 300
) -> tuple[int, dict[str, Any], str]:
    """Run the job image the way the Job's Pod does; returns exit code, result JSON, stderr."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir.chmod(0o777)  # the container's non-root user writes the termination log here
    cmd = [
        docker, "run", "--rm", "--network", "host",
        # The Pod's restricted context: non-root, read-only root, no capabilities.
        "--user", NONROOT, "--read-only", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "--tmpfs", "/scratch:rw,size=512m,uid=65532,gid=65532,mode=0700",
        "-v", f"{out_dir}:/out",
        "-e", "CLIP_WORK_DIR=/scratch", "-e", "CLIP_TERMINATION_LOG=/out/termination-log",
    ]  # fmt: skip
    for key, value in env.items():
        cmd += ["-e", f"{key}={value}"]
    proc = subprocess.run([*cmd, image], capture_output=True, text=True, timeout=timeout)
    log = out_dir / "termination-log"
    text = log.read_text() if log.exists() else ""
    assert len(text.encode()) < 4096, "termination message over 4 KiB"
    return proc.returncode, (json.loads(text) if text else {}), proc.stderr


def test_job_image_cuts_a_clip_into_s3(
    docker: str,
    job_image: str,
    media: MediaSet,
    media_server: MediaHTTPServer,
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    key = "media/image-test.mp4"
    env = {
        "CLIP_SOURCE_URL": f"{media_server.url}/{media.faststart}",
        "CLIP_START": "61.2",
        "CLIP_END": "67.2",
        "CLIP_OUTPUT_FORMAT": "mp4",
        "CLIP_MODE": "accurate",
        "CLIP_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
        "CLIP_ALLOW_PORTS": str(media_server.server_address[1]),
        "CLIP_NETWORK_TIMEOUT_SECONDS": "20",
        "CLIP_OUTPUT_FILENAME": "image test",
        "CLIP_S3_BUCKET": s3_bucket,
        "CLIP_S3_KEY": key,
        **s3_server.env(),
    }
    code, result, stderr = run_job(docker, job_image, env, tmp_path / "out")
    assert code == 0, f"job container failed: {result} {stderr[-2000:]}"

    clip = tmp_path / "clip.mp4"
    obj = s3_server.client().get_object(Bucket=s3_bucket, Key=key)
    clip.write_bytes(obj["Body"].read())
    assert obj["ContentType"] == "video/mp4"
    assert result["bucket"] == s3_bucket and result["key"] == key
    assert result["sizeBytes"] == clip.stat().st_size > 0
    duration = media_duration(clip)
    assert abs(duration - 6.0) <= 1 / 25 + 0.001, duration
    assert abs(result["durationSeconds"] - duration) < 0.05
    streams = ffprobe_json(clip, "-show_entries", "stream=codec_name,width,height")["streams"]
    video = next(s for s in streams if "width" in s)
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 640, 360)


def test_job_image_reports_a_refused_source_with_its_exit_code(
    docker: str, job_image: str, media: MediaSet, media_server: MediaHTTPServer, tmp_path: Path
) -> None:
    # Without the allow-list a loopback source is refused: exit 2, reason in the log.
    env = {
        "CLIP_SOURCE_URL": f"{media_server.url}/{media.faststart}",
        "CLIP_START": "10",
        "CLIP_END": "12",
        "CLIP_OUTPUT_FORMAT": "mp4",
        "CLIP_MODE": "fast",
        "CLIP_S3_BUCKET": "clips",
        "CLIP_S3_KEY": "never-written.mp4",
        "CLIP_S3_ENDPOINT": "http://127.0.0.1:9",
    }
    code, result, stderr = run_job(docker, job_image, env, tmp_path / "out")
    assert code == 2, stderr[-2000:]
    assert result["reason"] == "ForbiddenAddress"


@pytest.mark.parametrize(
    ("fixture", "entrypoint"),
    [("job_image", ["clip-worker"]), ("operator_image", ["clip-operator", "run"])],
)
def test_images_run_as_numeric_non_root_with_their_entrypoint(
    docker: str, fixture: str, entrypoint: list[str], request: pytest.FixtureRequest
) -> None:
    config = _inspect(docker, request.getfixturevalue(fixture))
    assert config["User"] == NONROOT
    assert config["Entrypoint"] == entrypoint


def test_operator_image_starts_its_cli(docker: str, operator_image: str) -> None:
    out = subprocess.run(
        [docker, "run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL",
         operator_image, "--help"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage: clip-operator run" in out.stdout


def _dockerfile_pin(name: str) -> str:
    """The version job-image/Dockerfile pins (ARG NAME=VERSION)."""
    for line in (REPO_ROOT / "job-image" / "Dockerfile").read_text().splitlines():
        if line.startswith(f"ARG {name}="):
            return line.split("=", 1)[1].strip()
    raise AssertionError(f"job-image/Dockerfile pins no {name}")


def _restricted_run(docker: str, image: str, entrypoint: str, *args: str) -> str:
    out = subprocess.run(
        [docker, "run", "--rm", "--network", "none", "--user", NONROOT, "--read-only",
         "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
         "--tmpfs", "/scratch:rw,size=64m,uid=65532,gid=65532,mode=0700",
         "--entrypoint", entrypoint, image, *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return out.stdout + out.stderr


def test_job_image_yt_dlp_sees_deno_and_the_challenge_solver(docker: str, job_image: str) -> None:
    # YouTube needs a JavaScript runtime and yt-dlp-ejs; without them yt-dlp --verbose says
    # "JS runtimes: none" and YouTube formats fail. Versions are the Dockerfile's pins.
    versions = {
        k: _dockerfile_pin(k) for k in ("YT_DLP_VERSION", "YT_DLP_EJS_VERSION", "DENO_VERSION")
    }
    text = _restricted_run(
        docker,
        job_image,
        "yt-dlp",
        "--verbose",
        "--ignore-config",
        "--simulate",
        "http://127.0.0.1:9/",
    )
    assert f"yt-dlp version stable@{versions['YT_DLP_VERSION']} " in text, text[-3000:]
    assert f"[debug] JS runtimes: deno-{versions['DENO_VERSION']}\n" in text, text[-3000:]
    assert f"yt_dlp_ejs-{versions['YT_DLP_EJS_VERSION']}" in text, text[-3000:]
    # The runtime runs under the Pod's restricted context (non-root, read-only root).
    text = _restricted_run(docker, job_image, "deno", "eval", "console.log(6 * 7)")
    assert text.strip().splitlines()[-1] == "42", text[-2000:]
