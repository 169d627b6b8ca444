"""examples/: every manifest parses; the GitOps ClipJobs are content-named, so an edited spec
is a new ClipJob (the spec is immutable: editing one in place fails to apply).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from clip_operator.models import parse_spec
from tests.unit.test_models import SCHEMA

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
GITOPS = EXAMPLES / "gitops"
TOOL = GITOPS / "content-name.py"
MANIFESTS = sorted(EXAMPLES.rglob("*.yaml"))


def docs_of(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_example_manifest_parses_into_kubernetes_objects(path: Path) -> None:
    docs = docs_of(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), doc
        assert doc.get("metadata", {}).get("name") or doc["kind"] == "Kustomization"


def gitops_clipjobs() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted(GITOPS.rglob("*.yaml"))
        for doc in docs_of(path)
        if doc["kind"] == "ClipJob"
    ]


def test_gitops_clipjobs_are_valid_and_named_after_their_spec() -> None:
    found = gitops_clipjobs()
    assert found, "examples/gitops has no ClipJob"
    for path, doc in found:
        jsonschema.validate(doc, SCHEMA)
        parse_spec(doc["spec"])
        canonical = json.dumps(doc["spec"], sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:8]
        assert doc["metadata"]["name"].endswith(f"-{digest}"), (
            f"{path}: {doc['metadata']['name']} is not content-named: "
            f"run python3 examples/gitops/content-name.py {path.relative_to(REPO)}"
        )
    listed = yaml.safe_load((GITOPS / "clips" / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(
        p.name for p in (GITOPS / "clips").glob("*.yaml") if p.name != "kustomization.yaml"
    )


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_an_edited_spec_gets_a_new_name_and_check_catches_a_stale_one(tmp_path: Path) -> None:
    original = GITOPS / "clips" / "chorus.yaml"
    copy = tmp_path / "chorus.yaml"
    shutil.copy(original, copy)
    assert tool("--check", str(copy)).returncode == 0
    old = docs_of(copy)[0]["metadata"]["name"]

    copy.write_text(copy.read_text().replace('end: "1:15"', 'end: "1:20"'))
    stale = tool("--check", str(copy))
    assert stale.returncode == 1 and f"ClipJob {old} should be named" in stale.stderr
    assert tool(str(copy)).returncode == 0
    new = docs_of(copy)[0]["metadata"]["name"]
    assert new != old and new.startswith("chorus-") and tool("--check", str(copy)).returncode == 0
    # Comments stay; only the name line changed.
    before, after = original.read_text().splitlines(), copy.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert [a.strip() for a, _ in changed] == [f"name: {old}", 'end: "1:15"']

    # Layout and key order do not rename.
    spec = docs_of(copy)[0]
    flipped = {**spec, "spec": dict(reversed(list(spec["spec"].items())))}
    other = tmp_path / "flipped.yaml"
    other.write_text(yaml.safe_dump(flipped, default_flow_style=True))
    assert tool("--check", str(other)).returncode == 0


def test_the_gitops_tools_prune_replaced_clipjobs() -> None:
    argo = [
        d
        for d in docs_of(GITOPS / "argocd-application.yaml")
        if d["metadata"]["name"] == "media-clips"
    ]
    assert argo[0]["spec"]["syncPolicy"]["automated"]["prune"] is True
    flux = [d for d in docs_of(GITOPS / "flux-helmrelease.yaml") if d["kind"] == "Kustomization"]
    assert flux[0]["spec"]["prune"] is True
    readme = (GITOPS / "README.md").read_text()
    assert "Force=true,Replace=true" in readme and "force: true" in readme
