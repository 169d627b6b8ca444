"""The Argo CD health check for ClipJob, run by a real Lua 5.1 (lupa) over status fixtures.

Argo CD runs `health.lua` with gopher-lua (Lua 5.1), the object as the global `obj`, JSON
arrays as 1-based tables. tests/fixtures/argocd/*.yaml hold an object and the expected
health status and a part of its message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HEALTH_LUA = REPO / "charts" / "clip-operator" / "argocd" / "clipjob-health.lua"
FIXTURES = sorted((REPO / "tests" / "fixtures" / "argocd").glob("*.yaml"))
ARGOCD_CM = REPO / "examples" / "gitops" / "argocd-cm-clipjob-health.yaml"

lua51 = pytest.importorskip("lupa.lua51", reason="lupa with Lua 5.1: pip install -e '.[dev]'")


def run_health(obj: dict[str, Any], script: str | None = None) -> dict[str, str]:
    """Evaluate the health script like Argo CD: `obj` global, script returns a table."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    assert lua.eval("_VERSION") == "Lua 5.1"
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script or HEALTH_LUA.read_text())
    return {str(k): str(v) for k, v in result.items()}


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_health_of_fixture(fixture: Path) -> None:
    case = yaml.safe_load(fixture.read_text())
    health = run_health(case["object"])
    assert health["status"] == case["expect"]["status"], health
    assert case["expect"]["message"] in health["message"], health


def test_every_phase_and_missing_status_is_covered() -> None:
    seen = {
        (yaml.safe_load(f.read_text())["object"].get("status") or {}).get("phase") for f in FIXTURES
    }
    assert {None, "Queued", "Running", "Succeeded", "Failed"} <= seen


def test_phases_of_the_crd_map_as_documented() -> None:
    crd = yaml.safe_load((REPO / "crds" / "clipjob.yaml").read_text())
    status_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    phases = status_schema["properties"]["phase"].get("enum")
    assert phases, "status.phase in the CRD lists its values"
    expected = {
        "Queued": "Progressing",
        "Running": "Progressing",
        "Succeeded": "Healthy",
        "Failed": "Degraded",
    }
    assert set(phases) == set(expected)
    for phase, health in expected.items():
        obj = {"metadata": {"generation": 1}, "status": {"phase": phase, "observedGeneration": 1}}
        assert run_health(obj)["status"] == health


def test_script_in_the_argocd_example_is_the_chart_file() -> None:
    """examples/gitops carries the script inline; it must not drift from the chart's file."""
    cm = yaml.safe_load(ARGOCD_CM.read_text())
    inline = cm["data"]["resource.customizations.health.mememaker.io_ClipJob"]
    assert inline.strip() == HEALTH_LUA.read_text().strip(), (
        f"{ARGOCD_CM.relative_to(REPO)} differs from {HEALTH_LUA.relative_to(REPO)}: copy it over"
    )


def test_a_broken_script_is_detected() -> None:
    """The harness really runs the Lua: a script returning the wrong status fails the check."""
    wrong = HEALTH_LUA.read_text().replace('hs.status = "Degraded"', 'hs.status = "Healthy"')
    obj = yaml.safe_load((FIXTURES[0].parent / "failed-worker.yaml").read_text())["object"]
    assert run_health(obj, wrong)["status"] == "Healthy"
    assert run_health(obj)["status"] == "Degraded"
