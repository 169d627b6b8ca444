"""`clip-operator smoke-test`: make one tiny clip end to end and wait for it to be Ready.

The chart's `helm test` hook runs it in the operator image under a ServiceAccount that may
only create, get and delete ClipJobs in one namespace: it proves that the operator runs,
that it can start the job image and that the configured S3 takes the upload. The ClipJob
names no storage, so the operator's default bucket and endpoint are what is tested; it is
deleted afterwards with deletionPolicy Delete, so the test leaves no clip behind.
"""

from __future__ import annotations

import time
from typing import Any

GROUP, VERSION, PLURAL = "mememaker.io", "v1alpha1", "clipjobs"
POLL_SECONDS = 2.0


def clipjob(source: str, start: str, end: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClipJob",
        "metadata": {
            "generateName": "smoke-test-",
            "labels": {"app.kubernetes.io/component": "smoke-test"},
        },
        "spec": {
            "source": {"url": source},
            "start": start,
            "end": end,
            "output": {"format": "mp4", "mode": "fast"},
            "retries": 0,
            "deletionPolicy": "Delete",
        },
    }


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


def _api() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def run(namespace: str, source: str, start: str, end: str, timeout: float, keep: bool) -> int:
    """Create the ClipJob, wait for Ready (0) or Failed/timeout (1), delete it unless keep."""
    api = _api()
    created = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, clipjob(source, start, end)
    )
    name = created["metadata"]["name"]
    began = time.monotonic()
    print(f"created ClipJob {namespace}/{name}: {source} {start}-{end}", flush=True)
    try:
        return _wait(api, namespace, name, began, timeout)
    finally:
        if not keep:
            try:
                api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
                print(f"deleted ClipJob {namespace}/{name}", flush=True)
            except Exception as exc:  # the verdict stands; say why the cleanup failed
                print(f"could not delete ClipJob {namespace}/{name}: {exc}", flush=True)


def _wait(api: Any, namespace: str, name: str, began: float, timeout: float) -> int:
    seen = ""
    while True:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        status = obj.get("status") or {}
        phase = status.get("phase") or "(no status yet)"
        if phase != seen:
            print(f"{time.monotonic() - began:6.1f} s  phase {phase}", flush=True)
            seen = phase
        if _condition(obj, "Ready").get("status") == "True":
            size = (status.get("output") or {}).get("sizeBytes")
            print(f"Ready: the clip ({size} bytes) is in S3 and has a download URL", flush=True)
            return 0
        if phase == "Failed":
            print(f"Failed: {status.get('reason')}: {status.get('message')}", flush=True)
            return 1
        if time.monotonic() - began > timeout:
            print(
                f"not Ready after {timeout:.0f} s: phase {phase}, "
                f"{status.get('reason') or ''} {status.get('message') or ''}".rstrip(),
                flush=True,
            )
            return 1
        time.sleep(POLL_SECONDS)
