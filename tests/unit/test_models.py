"""The pydantic models, the CRD schema and the example files agree."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from clip_operator.models import ClipJobSpec, ClipJobStatus, InvalidSpec, parse_spec

CRD = yaml.safe_load(Path("crds/clipjob.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
FILES = sorted(glob.glob("examples/*.yaml") + glob.glob("tests/fixtures/clipjobs/*.yaml"))


def crd_fields(schema: dict[str, Any]) -> set[str]:
    return set(schema.get("properties", {}))


def model_fields(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def nested(model: type[BaseModel], name: str) -> type[BaseModel]:
    annotation = model.model_fields[name].annotation
    for candidate in getattr(annotation, "__args__", (annotation,)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    raise AssertionError(f"{model.__name__}.{name} is not a model")


def compare(model: type[BaseModel], schema: dict[str, Any], path: str) -> None:
    assert model_fields(model) == crd_fields(schema), f"{path}: model and CRD fields differ"
    for name, sub in schema.get("properties", {}).items():
        if sub.get("type") == "object" and sub.get("properties"):
            py = next(n for n, f in model.model_fields.items() if (f.alias or n) == name)
            compare(nested(model, py), sub, f"{path}.{name}")


def test_spec_model_mirrors_crd() -> None:
    compare(ClipJobSpec, SCHEMA["properties"]["spec"], "spec")


def test_status_model_mirrors_crd() -> None:
    compare(ClipJobStatus, SCHEMA["properties"]["status"], "status")


def test_every_field_is_described() -> None:
    def walk(schema: dict[str, Any], path: str) -> None:
        for name, sub in schema.get("properties", {}).items():
            if name != "metadata":
                assert sub.get("description"), f"{path}.{name} has no description"
            walk(sub, f"{path}.{name}")
            if "items" in sub:
                walk(sub["items"], f"{path}.{name}[]")

    walk(SCHEMA, "")


@pytest.mark.parametrize("path", FILES)
def test_examples_and_fixtures_validate_against_crd_schema_and_models(path: str) -> None:
    doc = yaml.safe_load(Path(path).read_text())
    assert doc["apiVersion"] == "mememaker.io/v1alpha1" and doc["kind"] == "ClipJob"
    jsonschema.validate(doc, SCHEMA)
    parse_spec(doc["spec"])


def test_there_are_examples() -> None:
    names = {p.split("/")[-1] for p in FILES}
    assert {"minimal.yaml", "gif.yaml", "mp3.yaml", "tenant-storage.yaml"} <= names


BASE = {"source": {"url": "https://example.test/v"}, "start": "10", "end": "20"}

ERRORS = [
    (
        {"source": {"url": "ftp://example.test/v"}},
        "spec.source.url: source.url must be an http(s) URL",
    ),
    (
        {"source": {"url": "file:///etc/passwd"}},
        "spec.source.url: source.url must be an http(s) URL",
    ),
    (
        {"source": {"url": "https://"}},
        "spec.source.url: source.url must be an http(s) URL with a host",
    ),
    ({"start": "1:75"}, "spec.start: invalid timestamp '1:75'"),
    ({"end": "ten"}, "spec.end: invalid timestamp 'ten'"),
    ({"end": "10"}, "end (10) must be after start (10)"),
    ({"end": "5"}, "end (5) must be after start (10)"),
    ({"end": "20:00"}, "clip is 1190 s long; the maximum is 600 s"),
    (
        {"output": {"format": "avi"}},
        "spec.output.format: Input should be 'mp4', 'webm', 'gif' or 'mp3'",
    ),
    ({"output": {"mode": "slow"}}, "spec.output.mode: Input should be 'accurate' or 'fast'"),
    (
        {"output": {"maxHeight": 8}},
        "spec.output.maxHeight: Input should be greater than or equal to 16",
    ),
    (
        {"urlExpiresSeconds": 604801},
        "spec.urlExpiresSeconds: Input should be less than or equal to 604800",
    ),
    (
        {"urlExpiresSeconds": 10},
        "spec.urlExpiresSeconds: Input should be greater than or equal to 60",
    ),
    ({"retries": -1}, "spec.retries: Input should be greater than or equal to 0"),
    ({"deadlineSeconds": 5}, "spec.deadlineSeconds: Input should be greater than or equal to 30"),
    ({"deletionPolicy": "Orphan"}, "spec.deletionPolicy: Input should be 'Retain' or 'Delete'"),
    (
        {"storage": {"bucket": "ab"}},
        "spec.storage.bucket: String should have at least 3 characters",
    ),
    ({"storage": {"secretRef": {}}}, "spec.storage.secretRef.name: Field required"),
    ({"colour": "red"}, "spec.colour: Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("change", "message"), ERRORS)
def test_validation_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_spec({**BASE, **change})
    assert message in str(info.value)


def test_missing_fields_are_listed_together() -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_spec({})
    text = str(info.value)
    for field in ("spec.source", "spec.start", "spec.end"):
        assert f"{field}: Field required" in text


def test_defaults() -> None:
    spec = parse_spec(BASE)
    assert spec.output.format.value == "mp4" and spec.output.mode.value == "accurate"
    assert spec.deletion_policy == "Retain" and spec.duration_seconds == 10
