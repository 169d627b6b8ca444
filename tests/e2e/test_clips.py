"""ClipJob -> real Job -> real Pod of the job image on a real node -> real clip in S3.

The operator runs as a process (tests.plugins.cluster.operator_factory); each Job's Pod runs
`clip-job:dev` on the node, fetches from the media server and uploads to versitygw, both on
an address of this machine the Pod reaches (see conftest.py). The presigned `status.url` is
then downloaded with a plain HTTP GET and probed with FFprobe.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests import clipjobs
from tests.plugins.media import ffprobe_json, media_duration

pytestmark = pytest.mark.usefixtures("e2e_operator")

START, END = 10.0, 14.0
LENGTH = END - START
POD_TIMEOUT = 300.0
# FFprobe's duration of an accurate clip: within a frame (25 fps), GIF at 15 fps, MP3 frames.
TOLERANCE = {"mp4": 1 / 25 + 0.01, "webm": 1 / 25 + 0.01, "gif": 1 / 15 + 0.01, "mp3": 0.06}
CODEC = {"mp4": "h264", "webm": "vp9", "gif": "gif", "mp3": "mp3"}
CONTENT_TYPE = {"mp4": "video/mp4", "webm": "video/webm", "gif": "image/gif", "mp3": "audio/mpeg"}
SELECTOR = "mememaker.io/clipjob={name}"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _diagnose(kube: Any, namespace: str, name: str) -> str:
    lines = []
    for pod in kube.core.list_namespaced_pod(namespace).items:
        for cs in pod.status.container_statuses or []:
            lines.append(f"pod {pod.metadata.name} {pod.status.phase}: {cs.state}")
        if not pod.status.container_statuses:
            lines.append(f"pod {pod.metadata.name} {pod.status.phase}: {pod.status.conditions}")
    for ev in kube.core.list_namespaced_event(namespace).items[-15:]:
        lines.append(
            f"event {ev.involved_object.kind}/{ev.involved_object.name}: {ev.reason} {ev.message}"
        )
    obj = clipjobs.get(kube, namespace, name)
    lines.append(f"clipjob status: {obj.get('status')}")
    return "\n".join(lines)


def wait_terminal(
    kube: Any, namespace: str, name: str, timeout: float = POD_TIMEOUT
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = clipjobs.get(kube, namespace, name)
        if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return obj
        time.sleep(0.5)
    raise AssertionError(
        f"ClipJob {name} not finished after {timeout}s:\n{_diagnose(kube, namespace, name)}"
    )


def clip_manifest(name: str, url: str, fmt: str = "mp4", **spec: Any) -> dict[str, Any]:
    return clipjobs.manifest(
        name,
        source={"url": url},
        start=f"{START:g}",
        end=f"{END:g}",
        output={"format": fmt, "mode": "accurate"},
        **spec,
    )


def download(url: str, dest: Path) -> tuple[int, str]:
    with _NO_PROXY.open(url, timeout=60) as resp:
        dest.write_bytes(resp.read())
        return int(resp.status), str(resp.headers.get("Content-Type"))


def pods_of(kube: Any, namespace: str, name: str) -> list[Any]:
    return list(
        kube.core.list_namespaced_pod(namespace, label_selector=SELECTOR.format(name=name)).items
    )


def jobs_of(kube: Any, namespace: str, name: str) -> list[Any]:
    return list(
        kube.batch.list_namespaced_job(namespace, label_selector=SELECTOR.format(name=name)).items
    )


@pytest.mark.parametrize("fmt", ["mp4", "webm", "gif", "mp3"])
def test_clip_per_format_succeeds_and_url_downloads(
    node_kube: Any, namespace: str, media_server: Any, fmt: str, tmp_path: Path
) -> None:
    name = f"clip-{fmt}"
    t0 = time.monotonic()
    clipjobs.create(
        node_kube, namespace, clip_manifest(name, f"{media_server.url}/long_faststart.mp4", fmt)
    )
    obj = wait_terminal(node_kube, namespace, name)
    elapsed = time.monotonic() - t0
    status = obj["status"]
    assert status["phase"] == "Succeeded", _diagnose(node_kube, namespace, name)
    assert status["url"].startswith("http"), status
    out = tmp_path / f"clip.{fmt}"
    code, content_type = download(status["url"], out)
    assert code == 200
    assert content_type == CONTENT_TYPE[fmt]
    assert out.stat().st_size == status["output"]["sizeBytes"]
    streams = ffprobe_json(out, "-show_entries", "stream=codec_name,codec_type")["streams"]
    assert streams[0]["codec_name"] == CODEC[fmt], streams
    duration = media_duration(out)
    assert abs(duration - LENGTH) <= TOLERANCE[fmt], duration
    # It ran in a real Pod on the node, once.
    pods = pods_of(node_kube, namespace, name)
    assert len(pods) == 1 and pods[0].spec.node_name, pods
    term = pods[0].status.container_statuses[0].state.terminated
    assert term is not None and term.exit_code == 0
    print(
        f"{fmt}: ClipJob created -> Succeeded with URL in {elapsed:.1f}s;"
        f" timings {status.get('timings')}"
    )


@pytest.mark.parametrize(
    ("path", "reason"),
    [("garbage.mp4", "UnsupportedSource"), ("no-such-video.mp4", "SourceNotFound")],
)
def test_bad_source_fails_with_worker_reason_without_retries(
    node_kube: Any, namespace: str, media_server: Any, path: str, reason: str
) -> None:
    name = "bad-" + path.split(".")[0]
    clipjobs.create(
        node_kube, namespace, clip_manifest(name, f"{media_server.url}/{path}", retries=3)
    )
    obj = wait_terminal(node_kube, namespace, name)
    status = obj["status"]
    assert status["phase"] == "Failed", status
    assert status["reason"] == reason, status
    assert status.get("attempts", 1) == 1, status
    # A permanent failure fails the Job at once (podFailurePolicy): one Pod, no retries.
    time.sleep(3)
    pods = pods_of(node_kube, namespace, name)
    assert len(pods) == 1, [p.metadata.name for p in pods]
    assert pods[0].status.container_statuses[0].state.terminated.exit_code in (2, 3)
    (job,) = jobs_of(node_kube, namespace, name)
    assert (job.status.failed or 0) == 1
    assert any(c.type == "Failed" and c.status == "True" for c in job.status.conditions or [])


def test_delete_clipjob_removes_job_and_pods(
    node_kube: Any, namespace: str, media_server: Any
) -> None:
    name = "doomed"
    clipjobs.create(
        node_kube, namespace, clip_manifest(name, f"{media_server.url}/long_faststart.mp4")
    )
    clipjobs.wait_for("its Pod", lambda: pods_of(node_kube, namespace, name), timeout=60)
    node_kube.custom.delete_namespaced_custom_object(
        clipjobs.GROUP, clipjobs.VERSION, namespace, clipjobs.PLURAL, name
    )

    def all_gone() -> bool:
        try:
            clipjobs.get(node_kube, namespace, name)
            return False
        except Exception as exc:  # 404 once the finalizers ran
            if getattr(exc, "status", None) != 404:
                raise
        return not jobs_of(node_kube, namespace, name) and not pods_of(node_kube, namespace, name)

    clipjobs.wait_for("ClipJob, Job and Pods gone", all_gone, timeout=120, every=0.5)


def test_deletion_policy_delete_removes_the_object(
    node_kube: Any, namespace: str, media_server: Any, s3_server: Any, s3_bucket: str
) -> None:
    name = "tidy"
    clipjobs.create(
        node_kube,
        namespace,
        clip_manifest(name, f"{media_server.url}/long_faststart.mp4", deletionPolicy="Delete"),
    )
    status = wait_terminal(node_kube, namespace, name)["status"]
    assert status["phase"] == "Succeeded", status
    key = status["output"]["key"]
    s3 = s3_server.client()
    assert s3.head_object(Bucket=s3_bucket, Key=key)["ContentLength"] > 0
    node_kube.custom.delete_namespaced_custom_object(
        clipjobs.GROUP, clipjobs.VERSION, namespace, clipjobs.PLURAL, name
    )

    def object_gone() -> bool:
        listed = s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])
        return all(o["Key"] != key for o in listed)

    clipjobs.wait_for("the S3 object removed", object_gone, timeout=60, every=0.5)


def test_latency_of_a_10s_clip(node_kube: Any, namespace: str, media_server: Any) -> None:
    """ClipJob created -> URL in status, split into the steps a user waits for (printed)."""
    name = "timed"
    body = clipjobs.manifest(
        name,
        source={"url": f"{media_server.url}/long_faststart.mp4"},
        start="60",
        end="70",
        output={"format": "mp4", "mode": "accurate"},
    )
    marks: dict[str, float] = {}
    t0 = time.monotonic()
    clipjobs.create(node_kube, namespace, body)
    deadline = t0 + POD_TIMEOUT
    status: dict[str, Any] = {}
    while time.monotonic() < deadline and "url" not in marks:
        now = time.monotonic() - t0
        if "job" not in marks and jobs_of(node_kube, namespace, name):
            marks["job"] = now
        pods = pods_of(node_kube, namespace, name) if "job" in marks else []
        if pods:
            pod = pods[0]
            marks.setdefault("pod", now)
            if pod.spec.node_name:
                marks.setdefault("scheduled", now)
            for cs in pod.status.container_statuses or []:
                if cs.state.running or cs.state.terminated:
                    marks.setdefault("started", now)
                if cs.state.terminated:
                    marks.setdefault("exited", now)
        status = clipjobs.get(node_kube, namespace, name).get("status") or {}
        if status.get("url"):
            marks["url"] = now
        time.sleep(0.1)
    assert "url" in marks, f"no URL after {POD_TIMEOUT}s: {marks} {status}"
    assert status["phase"] == "Succeeded"
    # The operator reacts to the container's exit itself: the URL can come in the same poll
    # as the Pod listed still running. The exit then happened no later than the URL.
    marks.setdefault("exited", marks["url"])
    marks.setdefault("started", marks["exited"])
    steps = {
        "operator reaction (ClipJob -> Job)": marks["job"],
        "Job -> Pod created": marks["pod"] - marks["job"],
        "Pod created -> container started": marks["started"] - marks["pod"],
        "container run (worker)": marks["exited"] - marks["started"],
        "container exit -> URL in status": marks["url"] - marks["exited"],
        "total": marks["url"],
    }
    lines = [f"  {k:38s} {v:6.2f}s" for k, v in steps.items()]
    lines.append(f"  worker timings: {status.get('timings')}")
    print("latency of a 10 s clip (polled every 0.1 s):\n" + "\n".join(lines))
    assert marks["url"] < 120
