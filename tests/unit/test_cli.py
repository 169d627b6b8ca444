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


def test_operator_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    from clip_operator.cli import main as operator_main
    from clip_operator.config import ENV_PREFIX, OperatorConfig

    with pytest.raises(SystemExit) as done:
        operator_main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for name in OperatorConfig.model_fields:
        assert f"{ENV_PREFIX}{name.upper()} " in out, name


def test_worker_help_lists_its_inputs_and_runs_nothing() -> None:
    import re
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run(
        [sys.executable, "-m", "clip_worker", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stderr == ""
    readme = (Path(__file__).resolve().parents[2] / "job-image" / "README.md").read_text()
    inputs = readme.split("## Inputs", 1)[1].split("\n## ", 1)[0]
    for name in set(re.findall(r"`(CLIP_[A-Z_]+|AWS_[A-Z_]+)`", inputs)):
        assert name in proc.stdout, f"{name} is in job-image/README.md but not in --help"
    bad = subprocess.run(
        [sys.executable, "-m", "clip_worker", "now"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "--help" in bad.stderr
