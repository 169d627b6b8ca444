"""The `clip-operator` command as a user meets it: help, settings errors, bad clusters."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run(
        [sys.executable, "-m", "clip_operator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        check=False,
    )


def test_help_lists_the_commands() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    assert (
        "run" in proc.stdout and "check-config" in proc.stdout and "CLIP_OPERATOR_" in proc.stdout
    )


def test_check_config_prints_effective_settings() -> None:
    proc = run("check-config", env={"CLIP_OPERATOR_IN_FLIGHT_LIMIT": "3"})
    assert proc.returncode == 0, proc.stderr
    assert '"in_flight_limit": 3' in proc.stdout


@pytest.mark.parametrize(
    ("env", "text"),
    [
        ({"CLIP_OPERATOR_IN_FLIGHT_LIMIT": "lots"}, "CLIP_OPERATOR_IN_FLIGHT_LIMIT='lots'"),
        (
            {"CLIP_OPERATOR_NAMESPACE": "x"},
            "CLIP_OPERATOR_NAMESPACE is not a clip-operator setting",
        ),
    ],
)
def test_bad_setting_is_one_clear_line(env: dict[str, str], text: str) -> None:
    proc = run("run", env=env)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clip-operator: error: ") and text in lines[0]


def test_missing_kubeconfig_is_one_clear_line(tmp_path: object) -> None:
    proc = run("run", env={"KUBECONFIG": "/nonexistent/kubeconfig"})
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Kubernetes credentials" in lines[0]
    assert "Traceback" not in proc.stderr
