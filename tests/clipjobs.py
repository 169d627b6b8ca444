"""Small helpers for tests that create and watch ClipJobs through the real API server."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

GROUP, VERSION, PLURAL = "mememaker.io", "v1alpha1", "clipjobs"
T = TypeVar("T")

VALID_SPEC: dict[str, Any] = {
    "source": {"url": "http://127.0.0.1:9/video.mp4"},
    "start": "1:00",
    "end": "1:10",
}


def manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClipJob",
        "metadata": {"name": name},
        "spec": {**VALID_SPEC, **spec},
    }


def create(kube: Any, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create as kubectl does: unknown fields are errors (fieldValidation=Strict)."""
    return dict(
        kube.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
        )
    )


def get(kube: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict(kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float = 60, every: float = 0.2
) -> T:
    """Poll `check` until it returns a truthy value (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def wait_phase(
    kube: Any, namespace: str, name: str, phase: str, timeout: float = 60
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get(kube, namespace, name)
        return obj if (obj.get("status") or {}).get("phase") == phase else None

    return wait_for(f"ClipJob {name} phase {phase}", check, timeout)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return None


def events_for(kube: Any, namespace: str, name: str) -> list[Any]:
    items = kube.core.list_namespaced_event(namespace).items
    return [
        e for e in items if e.involved_object.name == name and e.involved_object.kind == "ClipJob"
    ]


def gone(kube: Any, namespace: str, name: str) -> bool:
    """True once the ClipJob no longer exists (finalizers done)."""
    from kubernetes.client.exceptions import ApiException

    try:
        get(kube, namespace, name)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False
