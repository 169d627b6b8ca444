"""What the chart gives the cluster's users: ClipJob rights through the built-in edit/admin
roles (never view), and a `helm test` hook that makes one clip with the least rights.

The RBAC these render is checked on a real API server with its clusterrole-aggregation
controller in tests/integration/test_user_roles.py; `helm test` runs on the real node in
tests/e2e/test_chart_e2e.py.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.unit.test_chart import CHART, helm, render, rules_of, template_args, user_roles

HOOK = "helm.sh/hook"


def hooks(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {d["kind"]: d for d in docs if (d["metadata"].get("annotations") or {}).get(HOOK)}
    assert all(d["metadata"]["annotations"][HOOK] == "test" for d in found.values())
    return found


def test_users_bound_to_edit_or_admin_get_clipjobs_never_view() -> None:
    (role,) = user_roles(render())
    labels = role["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert labels["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert not any("aggregate-to-view" in k for k in labels), "status holds the download URL"
    assert rules_of(role) == {
        ("mememaker.io", "clipjobs"): {
            "create",
            "get",
            "list",
            "watch",
            "delete",
            "deletecollection",
        }
    }


@pytest.mark.parametrize("off", ["rbac.aggregateToEditAdmin", "rbac.create"])
def test_user_roles_can_be_turned_off(off: str) -> None:
    assert user_roles(render(sets={off: "false"})) == []


def test_helm_test_hook_creates_one_clipjob_with_least_rights() -> None:
    docs = render(tests=True, sets={"tests.sourceUrl": "https://videos.example/a.mp4"})
    found = hooks(docs)
    assert set(found) == {"ServiceAccount", "Role", "RoleBinding", "Pod"}
    assert hooks(render()) == {}, "helm install must not create the test objects"

    sa, role, binding, pod = (found[k] for k in ("ServiceAccount", "Role", "RoleBinding", "Pod"))
    # RBAC first (weight -1), the Pod after; the RBAC goes once the test passes, the Pod
    # stays for `helm test --logs` (which reads it after the run) until the next run.
    for doc in (sa, role, binding):
        assert doc["metadata"]["annotations"]["helm.sh/hook-weight"] == "-1"
        policy = doc["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
        assert policy == "before-hook-creation,hook-succeeded"
    assert pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation"

    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "clip-system"
    assert rules_of(role) == {("mememaker.io", "clipjobs"): {"create", "get", "delete"}}
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "clip-system"}
    ]

    spec = pod["spec"]
    assert spec["serviceAccountName"] == sa["metadata"]["name"]
    assert spec["restartPolicy"] == "Never"
    (container,) = spec["containers"]
    assert container["image"] == "clip-operator:0.1.0"  # the operator image: no other pull
    assert container["command"] == ["clip-operator"]
    assert container["args"] == [
        "smoke-test",
        "--namespace=clip-system",
        "--source=https://videos.example/a.mp4",
        "--start=0",
        "--end=2",
        "--timeout=300",
    ]
    # Pod Security "restricted", like the operator's own Pod.
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = container["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}


def test_helm_test_uses_a_served_namespace() -> None:
    docs = render(tests=True, sets={"watchNamespaces[0]": "media"})
    found = hooks(docs)
    assert found["Role"]["metadata"]["namespace"] == "media"
    assert found["RoleBinding"]["metadata"]["namespace"] == "media"
    assert found["Pod"]["metadata"]["namespace"] == "clip-system"
    assert "--namespace=media" in found["Pod"]["spec"]["containers"][0]["args"]


def test_helm_test_refuses_a_namespace_the_operator_does_not_serve() -> None:
    args = template_args(
        sets={"watchNamespaces[0]": "media", "tests.namespace": "other"}, tests=True
    )
    proc = helm(*args, check=False)
    assert proc.returncode != 0
    assert "tests.namespace other is not one of watchNamespaces" in proc.stderr


def test_helm_test_can_be_turned_off() -> None:
    assert hooks(render(tests=True, sets={"tests.enabled": "false"})) == {}


def test_smoke_test_command_is_in_the_operator_cli() -> None:
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "clip_operator", "smoke-test", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for flag in ("--namespace", "--source", "--start", "--end", "--timeout", "--keep"):
        assert flag in out
    assert CHART.joinpath("templates/tests/smoke-test.yaml").exists()
