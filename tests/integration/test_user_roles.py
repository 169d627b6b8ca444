"""Users get ClipJob rights through the built-in roles, on a real API server whose
kube-controller-manager runs the clusterrole-aggregation controller (hack/cluster).

The chart's user ClusterRole carries the aggregate-to-edit and aggregate-to-admin labels:
a user bound to `edit` or `admin` in a namespace may create, read and delete ClipJobs
there; one bound to `view` may not even read them (their status holds the download URL).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.clipjobs import manifest, wait_for
from tests.integration.test_rbac import admin, forbidden
from tests.unit.test_chart import render, user_roles

pytestmark = pytest.mark.integration


def as_user(kube: Any, user: str, *args: str, stdin: str | None = None) -> Any:
    return subprocess.run(
        [kube.kubectl, "--kubeconfig", kube.kubeconfig, "--as", user, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def can(kube: Any, user: str, verb: str, namespace: str) -> bool:
    proc = as_user(kube, user, "auth", "can-i", verb, "clipjobs.mememaker.io", "-n", namespace)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), proc.stdout + proc.stderr
    return answer == "yes"


@pytest.fixture
def user_role(kube: Any, namespace: str) -> Iterator[dict[str, Any]]:
    """The chart's user ClusterRole (not applied yet); alice bound to edit, carol to admin,
    bob to view in the test namespace."""
    release = f"u{uuid.uuid4().hex[:6]}"
    (role,) = user_roles(render(release=release, namespace=namespace))
    for user, builtin in (("alice", "edit"), ("carol", "admin"), ("bob", "view")):
        admin(
            kube,
            "create",
            "rolebinding",
            f"{user}-{builtin}",
            f"--clusterrole={builtin}",
            f"--user={user}",
            "-n",
            namespace,
        )
    try:
        yield role
    finally:
        admin(kube, "delete", "clusterrole", role["metadata"]["name"], "--ignore-not-found")


def test_edit_and_admin_users_manage_clipjobs_view_users_cannot_read_them(
    kube: Any, namespace: str, user_role: dict[str, Any]
) -> None:
    # Without the chart's role, edit knows nothing of ClipJobs.
    assert not can(kube, "alice", "create", namespace)
    admin(kube, "apply", "-f", "-", stdin=yaml.safe_dump(user_role))
    # The aggregation controller copies the rules into edit and admin asynchronously.
    wait_for("edit to aggregate the ClipJob rules", lambda: can(kube, "alice", "create", namespace))
    wait_for(
        "admin to aggregate the ClipJob rules", lambda: can(kube, "carol", "create", namespace)
    )
    for user in ("alice", "carol"):
        for verb in ("create", "get", "list", "watch", "delete"):
            assert can(kube, user, verb, namespace), f"{user} may not {verb} clipjobs"
        assert not can(kube, user, "update", namespace), "spec is immutable: no update"
    for verb in ("get", "list", "watch", "create", "delete"):
        assert not can(kube, "bob", verb, namespace), f"view lets bob {verb} clipjobs"

    # Real requests: alice creates and reads a ClipJob, bob is refused both.
    body = yaml.safe_dump(manifest("by-alice"))
    proc = as_user(kube, "alice", "-n", namespace, "create", "-f", "-", stdin=body)
    assert proc.returncode == 0, proc.stderr
    assert as_user(kube, "alice", "-n", namespace, "get", "clipjob", "by-alice").returncode == 0
    assert forbidden(as_user(kube, "bob", "-n", namespace, "get", "clipjob", "by-alice"))
    assert forbidden(as_user(kube, "bob", "-n", namespace, "get", "clipjobs"))
    body = yaml.safe_dump(manifest("by-bob"))
    assert forbidden(as_user(kube, "bob", "-n", namespace, "create", "-f", "-", stdin=body))
    proc = as_user(kube, "alice", "-n", namespace, "delete", "clipjob", "by-alice", "--wait=false")
    assert proc.returncode == 0, proc.stderr

    # Elsewhere alice has no binding, so no ClipJob rights either.
    assert not can(kube, "alice", "create", "default")
