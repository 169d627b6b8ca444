"""Dedupe cache-hit latency: create -> Ready with a working URL, for identical ClipJobs.

    python -m bench.operator.cachehit --hits 20

On the local control plane with a real S3 server (versitygw): one ClipJob makes the clip
(its 'worker' uploads through the presigned PUTs the operator gave its Pod), then N
identical ClipJobs are created one after another and each is timed from the create call
returning to its status showing Ready=True with a URL (polled every 20 ms), and the URL is
downloaded. Target (issue 17): Ready within 1 s of creation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.operator.run import cleanup_namespace, local_kube, pct, wait_default_sa
from tests.clipjobs import create, get, manifest
from tests.integration.test_dedupe import CLIP, download, make_clip
from tests.plugins.cluster import OperatorProcess, free_port
from tests.plugins.s3 import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_SECRET_KEY,
    _start,
    _stop,
    _versitygw_binary,
)


def ready_url(obj: dict[str, Any]) -> str | None:
    status = obj.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond["type"] == "Ready" and cond["status"] == "True" and status.get("url"):
            return str(status["url"])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=20)
    parser.add_argument("--out", default="bench/operator/cachehit.json")
    args = parser.parse_args()
    kube = local_kube()
    root = Path(tempfile.mkdtemp(prefix="cachehit-"))
    s3proc, endpoint = _start(_versitygw_binary(), root, root / "versitygw.log")
    ns = f"cachehit-{uuid.uuid4().hex[:6]}"
    from kubernetes import client

    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    wait_default_sa(kube, ns)
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=DEFAULT_ACCESS_KEY,
        aws_secret_access_key=DEFAULT_SECRET_KEY,
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIP_OPERATOR_")}
    env.update(
        KUBECONFIG=kube.kubeconfig,
        CLIP_OPERATOR_S3_BUCKET="bench",
        CLIP_OPERATOR_DEDUPE="Namespace",
        CLIP_OPERATOR_S3_ENDPOINT=endpoint,
        AWS_ACCESS_KEY_ID=DEFAULT_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=DEFAULT_SECRET_KEY,
        CLIP_OPERATOR_METRICS_PORT=str(free_port()),
        CLIP_OPERATOR_HEALTH_PORT=str(free_port()),
    )
    health = int(env["CLIP_OPERATOR_HEALTH_PORT"])
    op = OperatorProcess(env, ns, root / "operator", health_port=health, namespaces=[ns])
    op.start()
    try:
        create(kube, ns, manifest("maker"))
        make_clip(kube, ns, "maker")
        deadline = time.monotonic() + 60
        while not ready_url(get(kube, ns, "maker")) and time.monotonic() < deadline:
            time.sleep(0.1)
        took: list[float] = []
        for n in range(args.hits):
            name = f"hit-{n:02d}"
            create(kube, ns, manifest(name))
            started = time.monotonic()
            url = None
            while url is None and time.monotonic() - started < 30:
                url = ready_url(get(kube, ns, name))
                if url is None:
                    time.sleep(0.02)
            took.append(time.monotonic() - started)
            assert url and download(url) == CLIP, f"{name}: no working URL"
            assert get(kube, ns, name)["status"].get("cache") == "Hit"
        jobs = len(kube.batch.list_namespaced_job(ns).items)
        result = {
            "hits": args.hits,
            "jobs": jobs,
            "p50": round(pct(took, 50), 3),
            "p95": round(pct(took, 95), 3),
            "max": round(max(took), 3),
        }
        print(json.dumps(result), flush=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    finally:
        op.kill()
        cleanup_namespace(kube, ns)
        _stop(s3proc)


if __name__ == "__main__":
    sys.exit(main())
