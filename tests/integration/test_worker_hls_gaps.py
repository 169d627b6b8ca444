"""An HLS segment that cannot be fetched never becomes a wrong clip.

FFmpeg's HLS demuxer skips a segment it fails to open ("Failed to open segment") and goes
on with the next one: the clip then silently holds later content with the right length.
The worker must fail instead, and upload nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mediaserver import MediaHTTPServer
from tests.plugins.media import MediaSet, run_worker, s3_target, worker_env

pytestmark = pytest.mark.integration


@pytest.fixture
def gap_server(media: MediaSet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("hls-gap")
    shutil.copytree(Path(media.root) / "hls", root / "hls")
    (root / "hls" / "seg0000.ts").unlink()  # the first segment is gone (404)
    server = MediaHTTPServer(root, "127.0.0.1", 0)
    server.start()
    try:
        yield f"{server.url}/hls/index.m3u8"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("mode", ["accurate", "fast"])
def test_a_missing_hls_segment_fails_and_uploads_nothing(
    mode: str, gap_server: str, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    env = worker_env(gap_server, 0.5, 1.5, mode=mode, **s3_target(s3_server, s3_bucket, "gap.mp4"))
    run = run_worker(env, tmp_path)
    assert run.returncode in (1, 3), (run.returncode, run.result, run.stderr[-1500:])
    assert run.result.get("reason") in ("SourceNotFound", "NetworkError"), run.result
    assert "segment" in str(run.result.get("message")), run.result
    listed = s3_server.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0)
    assert listed == 0, "a clip with a hole was uploaded"
