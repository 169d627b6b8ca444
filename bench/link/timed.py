"""Time to link on the local node: `kubectl apply` of a ClipJob -> `Ready` with a working URL.

Run through `python -m bench.link.run` (it loads the e2e tier's fixtures as plugins): the real
operator as a process, the real job image on hack/node's node, a 1280x720 25 fps source on the
media server and versitygw, both on the node's host address. ClipJobs are created one at a
time; every step is timed by watches on Jobs and Pods (Ready by polling every 20 ms), the
worker's own phases come from the container's termination message, and each URL is
downloaded and probed (a link that does not play fails the run). Results go to the JSON
file named by BENCH_LINK_OUT.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests import clipjobs
from tests.e2e.test_clips import download
from tests.plugins.media import MediaSet, MediaSpec, ensure_media, media_duration

pytestmark = pytest.mark.usefixtures("e2e_operator")

RUNS = int(os.environ.get("BENCH_LINK_RUNS", "20"))
START, LENGTH = 60.0, 10.0
POLL = 0.02
TIMEOUT = 180.0
# 720p, 25 fps, keyframe every 2 s (the shape of bench/clip's source), 2 minutes.
SPEC = MediaSpec(seconds=120, width=1280, height=720)


@pytest.fixture(scope="session")
def media() -> MediaSet:
    """The e2e media fixture, at 720p (generated once, cached like the test media)."""
    return ensure_media(SPEC)


class Watcher:
    """First sighting of each step, from watches on the namespace's Jobs and Pods."""

    def __init__(self, kube: Any, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace
        self.lock = threading.Lock()
        self.seen: dict[str, dict[str, float]] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, set[str]] = {}
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._watch, args=(kind,), daemon=True)
            for kind in ("job", "pod")
        ]
        for thread in self.threads:
            thread.start()

    def _mark(self, name: str, step: str) -> None:
        with self.lock:
            self.seen.setdefault(name, {}).setdefault(step, time.monotonic())

    def _watch(self, kind: str) -> None:
        from kubernetes import watch

        lister = (
            self.kube.batch.list_namespaced_job
            if kind == "job"
            else self.kube.core.list_namespaced_pod
        )
        while not self.stopping.is_set():
            w = watch.Watch()
            for event in w.stream(lister, self.namespace, timeout_seconds=30):
                obj = event["object"]
                name = (obj.metadata.labels or {}).get("mememaker.io/clipjob")
                if not name:
                    continue
                if kind == "job":
                    self._mark(name, "job")
                    continue
                self._mark(name, "pod")
                self.pods.setdefault(name, set()).add(obj.metadata.uid)
                if obj.spec.node_name:
                    self._mark(name, "scheduled")
                for cs in obj.status.container_statuses or []:
                    if cs.state.running or cs.state.terminated:
                        self._mark(name, "started")
                    if cs.state.terminated:
                        self._mark(name, "exited")
                        with contextlib.suppress(ValueError):
                            self.results[name] = json.loads(cs.state.terminated.message or "")
                if self.stopping.is_set():
                    w.stop()

    def marks(self, name: str, t0: float) -> dict[str, float]:
        with self.lock:
            return {k: v - t0 for k, v in self.seen.get(name, {}).items()}


def _ready(kube: Any, namespace: str, name: str, t0: float) -> tuple[float, dict[str, Any]]:
    status: dict[str, Any] = {}
    deadline = t0 + TIMEOUT
    while time.monotonic() < deadline:
        obj = clipjobs.get(kube, namespace, name)
        status = obj.get("status") or {}
        if status.get("phase") == "Failed":
            raise AssertionError(f"{name} failed: {status}")
        if (clipjobs.condition(obj, "Ready") or {}).get("status") == "True" and status.get("url"):
            return time.monotonic() - t0, status
        time.sleep(POLL)
    raise AssertionError(f"{name}: no URL after {TIMEOUT}s: {status}")


def test_time_to_link(
    node_kube: Any, namespace: str, media: MediaSet, media_server: Any, tmp_path: Path
) -> None:
    runs: list[dict[str, Any]] = []
    watcher = Watcher(node_kube, namespace)
    time.sleep(1)  # both watches established before the first create
    for i in range(RUNS):
        name = f"link-{i}"
        body = clipjobs.manifest(
            name,
            source={"url": f"{media_server.url}/{media.faststart}"},
            start=f"{START:g}",
            end=f"{START + LENGTH:g}",
        )
        t0 = time.monotonic()
        clipjobs.create(node_kube, namespace, body)
        ready, status = _ready(node_kube, namespace, name, t0)
        steps = {"job", "pod", "scheduled", "started", "exited"}
        settle = time.monotonic() + 5  # the poll may see Ready before our watch has the exit
        while not steps <= set(watcher.marks(name, t0)) and time.monotonic() < settle:
            time.sleep(POLL)
        marks = watcher.marks(name, t0)
        assert steps <= set(marks), f"{name}: the watches never saw {steps - set(marks)}: {marks}"
        # Seen after Ready means our watch lagged the operator's: the exit came no later.
        marks = {**{k: min(v, ready) for k, v in marks.items()}, "ready": ready}
        # A working URL: it downloads, and the clip plays for the length asked.
        clip = tmp_path / f"{name}.mp4"
        code, _ = download(status["url"], clip)
        duration = media_duration(clip)
        assert code == 200 and abs(duration - LENGTH) < 0.05, (code, duration)
        # A retried Pod (the Job's backoff) would hide a failure and its seconds: one per link.
        pods = len(watcher.pods.get(name, ()))
        assert pods == 1, f"{name}: {pods} Pods for one ClipJob (a failed attempt was retried)"
        worker = watcher.results.get(name, {}).get("timings") or {}
        runs.append({"marks": marks, "timings": worker, "status": status.get("timings") or {},
                     "duration": duration})  # fmt: skip
        print(f"run {i}: {marks['ready']:.2f} s {marks}", flush=True)
    watcher.stopping.set()
    out = os.environ.get("BENCH_LINK_OUT")
    if out:
        Path(out).write_text(json.dumps({"spec": SPEC.__dict__, "runs": runs}, indent=1))
