"""Alert rules: promtool checks them and runs their unit tests; every alert must be tested.

promtool passes silently when a test names an alert that does not exist, and says
nothing about alerts without tests, so both are checked here from the YAML.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
ALERTS = DASHBOARDS / "alerts.yaml"
ALERTS_TEST = DASHBOARDS / "alerts_test.yaml"
README = DASHBOARDS / "README.md"
SEVERITIES = {"critical", "warning", "info"}

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found: apt-get install prometheus"
)


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def alert_rules(doc: Any) -> dict[str, dict[str, Any]]:
    """Alert name -> rule, from a plain `groups:` rule file; duplicate names fail."""
    rules: dict[str, dict[str, Any]] = {}
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                name = rule["alert"]
                assert name not in rules, f"alert {name} is defined twice"
                rules[name] = rule
    return rules


def coverage_problems(rules: dict[str, dict[str, Any]], tests_doc: Any) -> list[str]:
    """Problems with test coverage: untested alerts, tests of unknown alerts."""
    firing: set[str] = set()
    silent: set[str] = set()
    named: set[str] = set()
    for test in tests_doc.get("tests") or []:
        for case in test.get("alert_rule_test") or []:
            name = case["alertname"]
            named.add(name)
            (firing if case.get("exp_alerts") else silent).add(name)
    problems = [f"test names unknown alert {n!r}" for n in sorted(named - rules.keys())]
    for name in sorted(rules):
        if name not in firing:
            problems.append(f"alert {name} has no firing test in {ALERTS_TEST.name}")
        if name not in silent:
            problems.append(f"alert {name} has no non-firing test in {ALERTS_TEST.name}")
    return problems


def test_every_alert_has_firing_and_non_firing_tests() -> None:
    rules = alert_rules(load_yaml(ALERTS))
    assert rules, "alerts.yaml defines no alerts"
    assert coverage_problems(rules, load_yaml(ALERTS_TEST)) == []


def test_coverage_check_catches_missing_and_misspelt_tests() -> None:
    rules: dict[str, dict[str, Any]] = {"A": {}, "B": {}}
    doc = {
        "tests": [
            {
                "alert_rule_test": [
                    {"alertname": "A", "exp_alerts": [{"exp_labels": {}}]},
                    {"alertname": "A", "exp_alerts": []},
                    {"alertname": "Bee", "exp_alerts": []},
                ]
            }
        ]
    }
    assert coverage_problems(rules, doc) == [
        "test names unknown alert 'Bee'",
        f"alert B has no firing test in {ALERTS_TEST.name}",
        f"alert B has no non-firing test in {ALERTS_TEST.name}",
    ]


def test_alert_tests_load_alerts_yaml() -> None:
    assert load_yaml(ALERTS_TEST)["rule_files"] == [ALERTS.name]


def readme_anchors() -> set[str]:
    """GitHub's anchors for the README's headings."""
    anchors = set()
    for line in README.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#+\s+(.*)", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("name", sorted(alert_rules(load_yaml(ALERTS))))
def test_alert_has_severity_annotations_and_runbook(name: str) -> None:
    rule = alert_rules(load_yaml(ALERTS))[name]
    assert rule.get("labels", {}).get("severity") in SEVERITIES
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        assert annotations.get(key), f"{name} has no {key} annotation"
    url = annotations["runbook_url"]
    assert url.startswith("https://"), url
    assert url.split("#")[0].endswith("dashboards/README.md"), url
    anchor = url.partition("#")[2]
    assert anchor == name.lower(), f"{name}: runbook anchor should be #{name.lower()}"
    assert anchor in readme_anchors(), f"README.md has no section '### {name}'"


def test_readme_runbook_sections_cover_diagnosis_and_mitigation() -> None:
    text = README.read_text(encoding="utf-8")
    for name in alert_rules(load_yaml(ALERTS)):
        section = text.split(f"### {name}\n", 1)[1].split("\n### ", 1)[0]
        for part in ("**Meaning**", "**Impact**", "**Diagnosis**", "**Mitigation**"):
            assert part in section, f"runbook of {name} lacks {part}"
        assert "kubectl " in section, f"runbook of {name} has no kubectl command"


@needs_promtool
def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", ALERTS_TEST.name, cwd=DASHBOARDS)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_test_rules_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    """The promtool run above can fail: flip every expectation and it must."""
    doc = load_yaml(ALERTS_TEST)
    for test in doc["tests"]:
        for case in test["alert_rule_test"]:
            case["exp_alerts"] = [] if case.get("exp_alerts") else [{"exp_labels": {}}]
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    (tmp_path / "flipped_test.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    result = promtool("test", "rules", "flipped_test.yaml", cwd=tmp_path)
    assert result.returncode != 0
    failed = set(re.findall(r"alertname: (\w+),", result.stdout + result.stderr))
    assert failed == set(alert_rules(load_yaml(ALERTS))), result.stdout + result.stderr
