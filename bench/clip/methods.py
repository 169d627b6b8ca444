"""The ways of making the clip the clip bench compares, each a function that makes the clip
file from the source URL: clip-worker (this tree, and optionally an older commit's),
`yt-dlp --download-sections` with and without `--force-keyframes-at-cuts`, a plain FFmpeg
stream copy, and a full download followed by an exact cut.

The worker runs as the operator runs it: no S3 credentials, a presigned PUT URL for the
clip and one for its result (made here with the bench's S3 keys, as the operator makes
them), the source's private address and port allowed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[2]
BUCKET = "bench-clip"


@dataclass(frozen=True)
class Method:
    """One way of making the clip: a name, the command shown in the report, the timed run,
    and for the worker the untimed fetch of its clip from S3 and its steps' times."""

    name: str
    command: str
    produce: Callable[[], Path]
    collect: Callable[[], dict[str, Any]] | None = None  # after timing: the worker's result
    # Before timing: what the operator does for the worker (presigned URLs, its variables).
    prepare: Callable[[], None] | None = None


# The worker's CLIP_DEBUG log times each FFmpeg/ffprobe child: "<what>: exit 0 after 0.52 s".
_STEP = re.compile(r"^clip-worker DEBUG (.+?): exit -?\d+ after ([0-9.]+) s$", re.M)


def run_checked(
    cmd: list[str], env: dict[str, str] | None = None, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed: {done.stderr[-1500:]}")
    return done


def s3_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=os.environ["CLIP_S3_ENDPOINT"],
        region_name=os.environ.get("CLIP_S3_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"),
    )  # fmt: skip


def worker_tree(rev: str) -> Path:
    """job-image/ of commit `rev`, unpacked in a temporary directory (for PYTHONPATH)."""
    target = Path(tempfile.mkdtemp(prefix=f"bench-worker-{rev[:12]}-"))
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev, "job-image/clip_worker"],
        check=True, capture_output=True, timeout=120,
    ).stdout  # fmt: skip
    with tempfile.TemporaryFile() as handle:
        handle.write(archive)
        handle.seek(0)
        with tarfile.open(fileobj=handle) as tar:
            tar.extractall(target, filter="data")
    return target / "job-image"


def _presigned(s3: Any, key: str, content_type: str) -> str:
    return str(s3.generate_presigned_url(
        "put_object", Params={"Bucket": BUCKET, "Key": key, "ContentType": content_type},
        ExpiresIn=3600, HttpMethod="PUT",
    ))  # fmt: skip


def worker_env(
    url: str, start: float, end: float, mode: str, key: str, work: Path
) -> dict[str, str]:
    """The worker's environment as the operator gives it: presigned URLs, no credentials."""
    s3 = s3_client()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLIP_", "AWS_"))}
    env.update({
        "CLIP_SOURCE_URL": url, "CLIP_START": f"{start}", "CLIP_END": f"{end}",
        "CLIP_OUTPUT_FORMAT": "mp4", "CLIP_MODE": mode,
        "CLIP_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
        "CLIP_ALLOW_PORTS": str(urlsplit(url).port or 80),
        "CLIP_S3_BUCKET": BUCKET, "CLIP_S3_KEY": key,
        "CLIP_UPLOAD_URL": _presigned(s3, key, "video/mp4"),
        "CLIP_UPLOAD_HEADERS": json.dumps({"Content-Type": "video/mp4"}),
        "CLIP_RESULT_URL": _presigned(s3, key + ".result.json", "application/json"),
        "CLIP_WORK_DIR": str(work / "scratch"),
        "CLIP_TERMINATION_LOG": str(work / f"{key}.json"),
    })  # fmt: skip
    return env


def methods(
    url: str, bulk_url: str, start: float, end: float, work: Path, before: Path | None
) -> list[Method]:
    """Every method for one source (`before`: an older worker's job-image/ directory)."""
    s3 = s3_client()
    ytdlp = [sys.executable, "-m", "yt_dlp", "--no-cache-dir", "--no-part", "--quiet",
             "--no-progress", "--force-overwrites"]  # fmt: skip
    section = f"*{start}-{end}"

    def worker(mode: str, tree: Path | None, tag: str) -> Method:
        key = f"{tag}-{mode}.mp4"
        out = work / key
        log: list[str] = []
        env: dict[str, str] = {}

        def prepare() -> None:
            env.clear()
            env.update(worker_env(url, start, end, mode, key, work))
            env["CLIP_DEBUG"] = "1"  # times every FFmpeg/ffprobe step
            if tree is not None:
                env["PYTHONPATH"] = str(tree)

        def go() -> Path:
            log[:] = [run_checked([sys.executable, "-m", "clip_worker"], env=env).stderr]
            return out

        def collect() -> dict[str, Any]:
            out.write_bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
            result: dict[str, Any] = json.loads((work / f"{key}.json").read_text())
            steps: dict[str, float] = {}
            for what, seconds in _STEP.findall(log[0] if log else ""):
                steps[what] = steps.get(what, 0.0) + float(seconds)
            result["_steps"] = steps
            return result

        name = f"clip-worker {mode}" + (" (before)" if tree is not None else "")
        return Method(name, f"clip-worker (CLIP_MODE={mode}, URL)", go, collect, prepare)

    def sections(force: bool) -> Callable[[], Path]:
        def go() -> Path:
            out = work / f"ytdlp-{int(force)}.mp4"
            extra = ["--force-keyframes-at-cuts"] if force else []
            run_checked([*ytdlp, "--download-sections", section, *extra, "-o", str(out), url])
            return out

        return go

    def plain_copy() -> Path:
        out = work / "copy.mp4"
        run_checked(["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{start}", "-to",
                     f"{end}", "-i", url, "-c", "copy", str(out)])  # fmt: skip
        return out

    def full() -> Path:
        whole, out = work / "full.mp4", work / "full-cut.mp4"
        run_checked([*ytdlp, "-o", str(whole), bulk_url])
        run_checked(["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{start}", "-i",
                     str(whole), "-t", f"{end - start}", "-c:v", "libx264", "-preset",
                     "veryfast", "-crf", "20", "-c:a", "aac", "-movflags", "+faststart",
                     str(out)])  # fmt: skip
        whole.unlink()
        return out

    chosen = [worker("fast", None, "after"), worker("accurate", None, "after")]
    if before is not None:
        chosen += [worker("fast", before, "before"), worker("accurate", before, "before")]
    return [
        *chosen,
        Method("yt-dlp --download-sections", f"yt-dlp --download-sections '{section}' URL",
               sections(False)),
        Method("yt-dlp --download-sections --force-keyframes-at-cuts",
               f"yt-dlp --download-sections '{section}' --force-keyframes-at-cuts URL",
               sections(True)),
        Method("ffmpeg stream copy", f"ffmpeg -ss {start} -to {end} -i URL -c copy out.mp4",
               plain_copy),
        Method("full download, then exact cut",
               "yt-dlp URL && ffmpeg -ss S -i full.mp4 -t 10 -c:v libx264 -preset veryfast ...",
               full),
    ]  # fmt: skip
