"""Steps the fault scenarios share: ClipJobs, their Jobs and Events, a worker's uploads."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from tests.clipjobs import GROUP, PLURAL, VERSION, create, get, manifest
from tests.kubelet_sim import env_of, success_message

CLIP_BYTES = b"\x00\x00\x00\x18ftypmp42" + b"clip" * 256
# A Job to create with dry_run="All": admission (quota, webhooks) runs, nothing is stored.
PROBE_JOB: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "admission-probe"},
    "spec": {
        "template": {
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "none"}]}
        }
    },
}


def new_clipjob(kube: Any, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return create(kube, namespace, manifest(name, **spec))


def delete_clipjob(kube: Any, namespace: str, name: str) -> None:
    kube.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def status_of(kube: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict(get(kube, namespace, name).get("status") or {})


def jobs_of(kube: Any, namespace: str, clipjob_uid: str) -> list[Any]:
    return [
        j
        for j in kube.batch.list_namespaced_job(namespace, _request_timeout=5).items
        if any(o.uid == clipjob_uid for o in j.metadata.owner_references or [])
    ]


def warning_events(kube: Any, namespace: str, uid: str, reason: str) -> list[Any]:
    """Warning Events about one object, read through core/v1 (which also shows events.k8s.io)."""
    items = kube.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.uid={uid}", _request_timeout=5
    ).items
    return [e for e in items if e.type == "Warning" and e.reason == reason]


def _put(url: str, body: bytes, headers: dict[str, str]) -> None:
    request = urllib.request.Request(url, data=body, method="PUT", headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        assert response.status in (200, 204), response.status


def upload_like_worker(pod: Any, s3: Any) -> dict[str, Any]:
    """What a successful worker leaves in S3: the clip and `<key>.result.json`; its result.

    Through the Pod's presigned URLs when it has them (CONTRACT.md), else with S3 keys
    (the older contract, where the worker held credentials).
    """
    env = env_of(pod)
    result = success_message(pod, size=len(CLIP_BYTES))
    document = json.dumps(result).encode()
    if env.get("CLIP_UPLOAD_URL"):
        headers = json.loads(env.get("CLIP_UPLOAD_HEADERS") or "{}")
        _put(env["CLIP_UPLOAD_URL"], CLIP_BYTES, headers)
        if env.get("CLIP_RESULT_URL"):
            _put(env["CLIP_RESULT_URL"], document, {"Content-Type": "application/json"})
    else:
        bucket, key = env["CLIP_S3_BUCKET"], env["CLIP_S3_KEY"]
        s3.put_object(Bucket=bucket, Key=key, Body=CLIP_BYTES, ContentType="video/mp4")
        s3.put_object(
            Bucket=bucket, Key=f"{key}.result.json", Body=document, ContentType="application/json"
        )
    return result


def object_exists(s3: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return False
        raise
    return True
