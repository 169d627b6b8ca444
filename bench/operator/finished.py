"""Status writes with many finished ClipJobs present, before and after the refresh horizon.

    python -m bench.operator.finished --count 10000 --url-seconds 600 --window 120

Creates N ClipJobs while no operator runs and writes each a Succeeded status as the
operator would have (an output, a URL whose issue time is spread evenly over one URL
lifetime, a completion time), then starts the real operator twice over the same objects
and counts the writes it makes to them in a window (MODIFIED events from our own watch,
and the operator's clip_operator_status_writes_total):

- "refresh forever" (CLIP_OPERATOR_URL_REFRESH_HORIZON_SECONDS=0, what every operator
  before the horizon did): every URL is renewed when a fifth of its life is left, so
  N / (0.8 x lifetime) writes per second, for ever;
- "horizon" (the default 7 days; these ClipJobs finished 8 days ago): no renewal; each
  ClipJob gets one URLExpired write when its URL dies, then none.

A short URL lifetime makes the window long enough to see every ClipJob's refresh; the
rate scales as 1 / lifetime (3,600 s URLs: 4.3x fewer writes than 600 s).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.operator.run import (
    REPO,
    cleanup_namespace,
    local_kube,
    proc_stats,
    start_operator,
    wait_default_sa,
)
from tests.plugins.cluster import Kube

GROUP, VERSION, PLURAL = "mememaker.io", "v1alpha1", "clipjobs"


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def seed(kube: Kube, ns: str, count: int, url_seconds: int, finished_days: float) -> None:
    """N Succeeded ClipJobs, URLs issued evenly over the last lifetime (no operator runs)."""
    now = datetime.now(UTC)
    done = now - timedelta(days=finished_days)

    def one(n: int) -> None:
        name = f"done-{n:05d}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClipJob",
            "metadata": {"name": name},
            "spec": {"source": {"url": "https://e.test/v.mp4"}, "start": "0", "end": "10"},
        }
        kube.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        issued = now - timedelta(seconds=random.uniform(0, url_seconds * 0.8))
        cond = {
            "type": "Ready",
            "status": "True",
            "reason": "Succeeded",
            "message": "clip is ready",
            "lastTransitionTime": iso(done),
        }
        status = {
            "phase": "Succeeded",
            "reason": "Succeeded",
            "message": "clip is ready",
            "completionTime": iso(done),
            "queuedAt": iso(done),
            "jobName": f"{name}-clip-000000",
            "output": {"bucket": "clips", "key": f"{ns}/{name}.mp4", "sizeBytes": 1000},
            "url": f"https://s3.example/clips/{name}.mp4?X-Amz-Signature=0",
            "urlIssuedAt": iso(issued),
            "urlExpiresAt": iso(issued + timedelta(seconds=url_seconds)),
            "conditions": [cond],
        }
        kube.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, PLURAL, name, {"status": status}
        )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))


def status_writes(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("clip_operator_status_writes_total "):
                return float(line.split()[1])
    return 0.0


def count_modified(kube: Kube, ns: str, stop: threading.Event, out: list[float]) -> None:
    from kubernetes import watch

    rv = kube.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, limit=1)["metadata"][
        "resourceVersion"
    ]
    w = watch.Watch()
    for event in w.stream(
        kube.custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        ns,
        PLURAL,
        resource_version=rv,
        timeout_seconds=600,
    ):
        if event["type"] == "MODIFIED":
            out.append(time.monotonic())
        if stop.is_set():
            w.stop()
            return


def measure(
    kube: Kube,
    ns: str,
    settings: dict[str, str],
    window: float,
    warmup: float,
    workdir: Path,
    label: str,
) -> dict[str, Any]:
    stop, stamps = threading.Event(), []
    watcher = threading.Thread(target=count_modified, args=(kube, ns, stop, stamps), daemon=True)
    watcher.start()
    time.sleep(1)
    started = time.monotonic()
    proc = start_operator(kube, ns, workdir / f"finished-{label}.log", settings)
    port = proc.metrics_port  # type: ignore[attr-defined]
    ready = time.monotonic()
    # The start-up pass (every ClipJob reconciled once) and, past the horizon, the one
    # URLExpired write per ClipJob (within one URL lifetime) are not steady state.
    time.sleep(warmup)
    w0, t0 = status_writes(port), time.monotonic()
    time.sleep(window)
    w1, t1 = status_writes(port), time.monotonic()
    stats = proc_stats(proc.pid)
    proc.terminate()
    proc.wait(timeout=30)
    stop.set()
    in_window = [s for s in stamps if t0 <= s <= t1]
    return {
        "label": label,
        "settings": settings,
        "startup_seconds": round(ready - started, 2),
        "window_seconds": round(t1 - t0, 1),
        "writes_per_second": round((w1 - w0) / (t1 - t0), 3),
        "modified_events_per_second": round(len(in_window) / (t1 - t0), 3),
        "warmup_seconds": warmup,
        "writes_before_window": int(w0),
        "rss_mb": stats.get("rss_mb"),
        "cpu_seconds": stats.get("cpu_seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--url-seconds", type=int, default=600)
    parser.add_argument("--window", type=float, default=120)
    parser.add_argument("--out", default="bench/operator/finished.json")
    args = parser.parse_args()
    kube = local_kube()
    workdir = Path(os.environ.get("CLUSTER_DIR") or REPO / ".cluster") / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    ns = f"finished-{uuid.uuid4().hex[:6]}"
    from kubernetes import client

    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    wait_default_sa(kube, ns)
    t = time.monotonic()
    seed(kube, ns, args.count, args.url_seconds, finished_days=8)
    seeded = time.monotonic() - t
    print(f"seeded {args.count} finished ClipJobs in {seeded:.0f} s", flush=True)
    common = {"default_url_expires_seconds": str(args.url_seconds), "dedupe": "Off"}
    runs = [
        measure(
            kube,
            ns,
            {**common, "url_refresh_horizon_seconds": "0"},
            args.window,
            60,
            workdir,
            "refresh-forever",
        ),
        measure(kube, ns, common, args.window, args.url_seconds + 30, workdir, "horizon"),
    ]
    for run in runs:
        print(json.dumps(run), flush=True)
    cleanup_namespace(kube, ns)
    Path(args.out).write_text(
        json.dumps({"count": args.count, "url_seconds": args.url_seconds, "runs": runs}, indent=1)
        + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
