"""The API server itself rejects bad ClipJobs at `kubectl apply` (schema + CEL rules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.clipjobs import GROUP, PLURAL, VERSION, create, manifest

pytestmark = pytest.mark.integration

INVALID = [
    (
        "bad-scheme",
        {"source": {"url": "ftp://example.test/v.mp4"}},
        "spec.source.url",
        "http:// or https://",
    ),
    (
        "file-scheme",
        {"source": {"url": "file:///etc/passwd"}},
        "spec.source.url",
        "http:// or https://",
    ),
    (
        "end-before-start",
        {"start": "1:10", "end": "1:00"},
        "spec.end",
        "must be later than spec.start",
    ),
    (
        "end-equals-start",
        {"start": "65", "end": "1:05"},
        "spec.end",
        "must be later than spec.start",
    ),
    ("malformed-time", {"start": "1:75"}, "spec.start", "should match"),
    ("malformed-end", {"end": "ten"}, "spec.end", "should match"),
    ("too-long", {"start": "0", "end": "10:00.5"}, "spec.end", "at most 600 seconds"),
    ("too-long-hours", {"start": "1:00:00", "end": "1:20:00"}, "spec.end", "at most 600 seconds"),
    ("unknown-field", {"colour": "red"}, "spec.colour", "unknown field"),
    ("negative-retries", {"retries": -1}, "spec.retries", "greater than or equal to 0"),
    (
        "expiry-over-7-days",
        {"urlExpiresSeconds": 604801},
        "spec.urlExpiresSeconds",
        "less than or equal to 604800",
    ),
    ("bad-format", {"output": {"format": "avi"}}, "spec.output.format", "Unsupported value"),
    ("bad-policy", {"deletionPolicy": "Orphan"}, "spec.deletionPolicy", "Unsupported value"),
]


@pytest.mark.parametrize(("name", "spec", "field", "text"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_clipjobs_are_rejected_naming_the_field(
    kube: Any, namespace: str, name: str, spec: dict[str, Any], field: str, text: str
) -> None:
    with pytest.raises(ApiException) as info:
        create(kube, namespace, manifest(name, **spec))
    assert info.value.status in (400, 422), info.value.body
    body = info.value.body
    assert field in body, body
    assert text in body, body


def test_spec_is_immutable(kube: Any, namespace: str) -> None:
    create(kube, namespace, manifest("immutable"))
    with pytest.raises(ApiException) as info:
        kube.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "immutable", {"spec": {"end": "1:20"}}
        )
    assert info.value.status == 422
    assert "spec is immutable" in info.value.body


@pytest.mark.parametrize(
    "path",
    sorted(
        str(p)
        for p in [*Path("examples").glob("*.yaml"), *Path("tests/fixtures/clipjobs").glob("*.yaml")]
    ),
)
def test_examples_are_accepted(kube: Any, namespace: str, path: str) -> None:
    doc = yaml.safe_load(Path(path).read_text())
    created = create(kube, namespace, doc)
    assert created["spec"]["output"]["format"] in ("mp4", "webm", "gif", "mp3")  # defaults applied
    assert created["spec"]["deletionPolicy"] in ("Retain", "Delete")


def test_printer_columns_and_short_name(kube: Any, namespace: str) -> None:
    create(kube, namespace, manifest("columns"))
    out = kube.run_kubectl("get", "clip", "-n", namespace)
    assert out.returncode == 0, out.stderr
    header = out.stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "DURATION", "URL-EXPIRY", "AGE"]
    explain = kube.run_kubectl("explain", "clipjob.spec.output.mode")
    assert "accurate" in explain.stdout, explain.stderr
