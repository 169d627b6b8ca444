"""Golden-file tests of the Job builder: tests/fixtures/golden/{input,output}/NAME.yaml.

Regenerate after an intended change with UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest
import yaml

from clip_operator.builders import ClipJobRef, UploadTarget, build_job, job_name, object_key
from clip_operator.config import load_config
from clip_operator.models import parse_spec

GOLDEN = Path("tests/fixtures/golden")
CASES = sorted(Path(p).stem for p in glob.glob(str(GOLDEN / "input" / "*.yaml")))


def render(case: str) -> dict:
    doc = yaml.safe_load((GOLDEN / "input" / f"{case}.yaml").read_text())
    env = {f"CLIP_OPERATOR_{k.upper()}": str(v) for k, v in (doc.get("config") or {}).items()}
    config = load_config(env)
    meta = doc["clipjob"]["metadata"]
    ref = ClipJobRef(meta["name"], meta["namespace"], meta["uid"])
    upload = UploadTarget(
        url="https://s3.test/clips/key?X-Amz-Signature=put",
        headers={"Content-Type": "video/mp4"},
        result_url="https://s3.test/clips/key.result.json?X-Amz-Signature=put",
    )
    return build_job(ref, parse_spec(doc["clipjob"]["spec"]), config, upload)


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 3


@pytest.mark.parametrize("case", CASES)
def test_job_matches_golden_file(case: str) -> None:
    job = render(case)
    out = GOLDEN / "output" / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        out.write_text(yaml.safe_dump(job, sort_keys=False))
    assert job == yaml.safe_load(out.read_text()), (
        f"regenerate with UPDATE_GOLDEN=1 and review {out}"
    )


@pytest.mark.parametrize("case", CASES)
def test_job_follows_the_contract(case: str) -> None:
    job = render(case)
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    sc = container["securityContext"]
    assert (
        sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    )
    assert (
        sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"]["type"] == "RuntimeDefault"
    )
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "clip", "operator": "In", "values": [2, 3]},
    }
    assert rules[1]["action"] == "Ignore"
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ClipJob" and owner["controller"] is True
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "clip-operator"
    assert (
        pod["volumes"][0]["emptyDir"]["sizeLimit"]
        == container["resources"]["limits"]["ephemeral-storage"]
    )
    env = {e["name"] for e in container["env"]}
    assert {"CLIP_SOURCE_URL", "CLIP_START", "CLIP_END", "CLIP_S3_BUCKET", "CLIP_S3_KEY"} <= env
    # inputs are data in env vars, never a shell command line
    assert "command" not in container and "args" not in container
    # the worker holds no credentials: presigned URLs only, no Secret reference anywhere
    assert {"CLIP_UPLOAD_URL", "CLIP_UPLOAD_HEADERS", "CLIP_RESULT_URL"} <= env
    assert not any(name.startswith("AWS_") for name in env)
    assert all("valueFrom" not in e for e in container["env"])
    assert "secret" not in yaml.safe_dump(pod).lower()


def test_job_name_is_deterministic_short_and_unique_per_uid() -> None:
    long = ClipJobRef("x" * 253, "ns", "1b4e28ba-2fa1-11d2-883f-0016d3cca427")
    name = job_name(long)
    assert len(name) <= 63 and name == job_name(long)
    assert name != job_name(ClipJobRef("x" * 253, "ns", "2b4e28ba-2fa1-11d2-883f-0016d3cca427"))


def test_object_key_is_per_clipjob() -> None:
    spec = parse_spec(
        {
            "source": {"url": "https://e.test/v"},
            "start": "0",
            "end": "1",
            "output": {"format": "gif"},
        }
    )
    assert object_key(ClipJobRef("meme", "team", "abcdef12-3456"), spec) == "team/meme-abcdef12.gif"
