"""Chart value names match the operator settings they set (README: Configuration).

Every leaf of the setting sections becomes one CLIP_OPERATOR_* variable by one rule per
section (`operator.fooBar` -> FOO_BAR, `storage.fooBar` -> S3_FOO_BAR, `job.fooBar` ->
JOB_FOO_BAR, `notify.fooBar` -> NOTIFY_FOO_BAR, `leaderElection.fooBar` -> FOO_BAR); the
few values shaped otherwise are listed below with the reason, and each must still reach
its variable. A value added under another name, or a variable no value sets, fails here.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from clip_operator.config import ENV_PREFIX, OperatorConfig
from tests.unit.test_chart import CHART, operator_env, render

PREFIX = {
    "operator": "",
    "storage": "S3_",
    "job": "JOB_",
    "notify": "NOTIFY_",
    "leaderElection": "",
}
# Values whose shape differs from their variable, with why.
SHAPED = {
    # Helm-convention name for the namespaces served.
    "watchNamespaces": "NAMESPACES",
    # An image is repository + tag in charts; one variable holds the reference.
    "job.image.repository": "JOB_IMAGE",
    "job.image.tag": "JOB_IMAGE",
    # Kubernetes' own resources shape.
    "job.resources.requests.cpu": "JOB_CPU_REQUEST",
    "job.resources.limits.cpu": "JOB_CPU_LIMIT",
    "job.resources.requests.memory": "JOB_MEMORY_REQUEST",
    "job.resources.limits.memory": "JOB_MEMORY_LIMIT",
    "leaderElection.enabled": "LEADER_ELECTION",
}
# Values that set no CLIP_OPERATOR_* variable, with what they set instead.
NOT_SETTINGS = {
    "operator.verbose": "the --verbose argument",
    "storage.operatorCredentialsSecret": "AWS_* variables from that Secret",
}
# Variables the chart derives rather than reads from a value.
DERIVED = {
    "LEASE_NAME": "the release's full name",
    "LEASE_NAMESPACE": "the release namespace",
    "WORKER_NETWORK_POLICY": "the networkPolicy block, as JSON",
}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def leaves(tree: dict[str, Any], path: str = "") -> list[str]:
    out: list[str] = []
    for key, value in tree.items():
        full = f"{path}.{key}" if path else key
        if isinstance(value, dict) and value and full not in SHAPED:
            out += leaves(value, full)
        else:
            out.append(full)
    return out


def expected(path: str) -> str | None:
    if path in SHAPED:
        return ENV_PREFIX + SHAPED[path]
    if path in NOT_SETTINGS:
        return None
    section, _, rest = path.partition(".")
    return ENV_PREFIX + PREFIX[section] + "_".join(snake(p) for p in rest.split("."))


def test_every_setting_value_is_named_after_its_variable() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    env = operator_env(
        render(
            values=[CHART / "ci/custom-storage-values.yaml", CHART / "ci/namespaced-values.yaml"],
            sets={"networkPolicy.enabled": "true"},
        )
    )
    paths = [p for section in PREFIX for p in leaves(values[section], section)]
    paths.append("watchNamespaces")
    settings = {ENV_PREFIX + name.upper() for name in OperatorConfig.model_fields}
    wrong = []
    produced = set()
    for path in paths:
        var = expected(path)
        if var is None:
            continue
        produced.add(var)
        if var not in settings:
            wrong.append(f"{path} would set {var}, which is no operator setting: rename the value")
        elif var not in env:
            wrong.append(f"{path} should set {var}, the chart does not")
    assert not wrong, "\n".join(wrong)
    unexplained = {k for k in env if k.startswith(ENV_PREFIX) and k not in produced} - {
        ENV_PREFIX + d for d in DERIVED
    }
    assert not unexplained, f"variables no value of the same name sets: {sorted(unexplained)}"


def test_a_removed_value_name_fails_loudly() -> None:
    """storage.jobCredentialsSecret (workers held keys, issue 12) is gone; the schema refuses
    it instead of ignoring it."""
    from tests.unit.test_chart import helm, template_args

    proc = helm(*template_args(sets={"storage.jobCredentialsSecret": "s"}), check=False)
    assert proc.returncode != 0 and "jobCredentialsSecret" in proc.stderr
