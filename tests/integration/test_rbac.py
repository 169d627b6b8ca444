"""The operator's rights as the chart renders them, on a real API server (RBAC authorizer).

Each test renders the chart for one setup, applies its ServiceAccount and RBAC objects, and
asks the API server what that ServiceAccount may do (`kubectl auth can-i
--as=system:serviceaccount:<ns>:<sa>`, a SubjectAccessReview), plus a few real requests
made as it. What the README's table promises (tests/unit/test_chart_security.py) holds:
no Secret readable outside the namespaces listed for tenant Secrets, never a list or watch of
Secrets, no Pods, no deleting ClipJobs; and what the operator needs, it has. And the Jobs it
may create are only clip Jobs (the chart's ValidatingAdmissionPolicy): `create jobs` does not
become "mount any Secret, run as any ServiceAccount".
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.unit.test_chart import operator_env, render

pytestmark = pytest.mark.integration

RBAC_KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
POLICY = "clip-worker-egress"


class Identity:
    """The chart's ServiceAccount for one release, applied to the cluster."""

    def __init__(self, kube: Any, namespace: str, release: str, docs: list[dict[str, Any]]):
        self.kube, self.namespace, self.docs, self.release = kube, namespace, docs, release
        self.sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
        self.user = f"system:serviceaccount:{namespace}:{self.sa}"

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.kube.kubectl, "--kubeconfig", self.kube.kubeconfig, "--as", self.user, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def can(self, verb: str, resource: str, namespace: str | None = None) -> bool:
        """`resource` is `kind.group`, `kind.group:subresource` or `kind.group/name`."""
        where = ["--all-namespaces"] if namespace is None else ["-n", namespace]
        resource, _, sub = resource.partition(":")
        extra = ["--subresource", sub] if sub else []
        proc = self.kubectl("auth", "can-i", verb, resource, *where, *extra)
        answer = proc.stdout.strip()
        assert answer in ("yes", "no"), proc.stdout + proc.stderr
        return answer == "yes"


def admin(kube: Any, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [kube.kubectl, "--kubeconfig", kube.kubeconfig, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl {' '.join(args)}:\n{proc.stderr}"
    return proc.stdout


@pytest.fixture
def namespaces(kube: Any) -> Iterator[Callable[[], str]]:
    """Make extra namespaces on demand; all deleted afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"clip-rbac-{uuid.uuid4().hex[:8]}"
        admin(kube, "create", "namespace", name)
        made.append(name)
        return name

    yield make
    for name in made:
        admin(kube, "delete", "namespace", name, "--wait=false")


@pytest.fixture
def install_rbac(kube: Any, namespace: str) -> Iterator[Callable[[dict[str, str]], Identity]]:
    """Render the chart with the given --set values and apply only its identity objects."""
    releases: list[str] = []

    def install(sets: dict[str, str]) -> Identity:
        release = f"r{uuid.uuid4().hex[:6]}"
        docs = render(sets=sets, release=release, namespace=namespace)
        identity = [d for d in docs if d["kind"] in RBAC_KINDS]
        assert {d["kind"] for d in identity} >= {"ServiceAccount"}
        releases.append(release)
        admin(kube, "apply", "-f", "-", stdin=yaml.safe_dump_all(identity))
        found = Identity(kube, namespace, release, docs)
        return found

    yield install
    for release in releases:
        admin(
            kube,
            "delete",
            "clusterroles,clusterrolebindings,validatingadmissionpolicies,"
            "validatingadmissionpolicybindings",
            "-l",
            f"app.kubernetes.io/instance={release}",
            "--ignore-not-found",
        )


def forbidden(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode != 0 and "forbidden" in proc.stderr.lower()


def assert_core_rights(who: Identity, ns: str) -> None:
    """What every setup needs in a served namespace, and what none may do."""
    for verb, resource in [
        ("watch", "clipjobs.mememaker.io"),
        ("patch", "clipjobs.mememaker.io"),
        ("patch", "clipjobs.mememaker.io:status"),
        ("update", "clipjobs.mememaker.io:finalizers"),
        ("delete", "clipjobs.mememaker.io"),  # ttlSecondsAfterFinished
        ("create", "jobs.batch"),
        ("delete", "jobs.batch"),
        ("list", "pods"),
        ("watch", "pods"),
        ("create", "events"),
        ("list", "events"),
        ("create", "events.events.k8s.io"),
        ("patch", "events.events.k8s.io"),
    ]:
        assert who.can(verb, resource, ns), f"cannot {verb} {resource} in {ns}"
    for verb, resource in [
        ("create", "pods"),
        ("create", "pods:exec"),
        ("update", "clipjobs.mememaker.io"),
        ("update", "clipjobs.mememaker.io:status"),
        ("create", "clipjobs.mememaker.io"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("update", "deployments.apps"),
        ("create", "configmaps"),
        ("patch", "jobs.batch"),
        ("create", "rolebindings.rbac.authorization.k8s.io"),
    ]:
        assert not who.can(verb, resource, ns), f"can {verb} {resource} in {ns}"


def test_default_install_reads_no_secret_anywhere(
    kube: Any,
    namespace: str,
    namespaces: Callable[[], str],
    install_rbac: Callable[[dict[str, str]], Identity],
) -> None:
    tenant = namespaces()
    admin(kube, "-n", tenant, "create", "secret", "generic", "tenant-s3", "--from-literal=k=v")
    who = install_rbac({})
    for ns in (namespace, tenant):
        assert_core_rights(who, ns)  # cluster-wide: the operator serves every namespace
        for verb in ("get", "create", "update", "patch", "delete"):
            assert not who.can(verb, "secrets", ns), f"can {verb} secrets in {ns}"
        assert not who.can("create", "networkpolicies.networking.k8s.io", ns)
    for verb in ("get", "list", "watch"):
        assert not who.can(verb, "secrets"), f"can {verb} secrets in all namespaces"
    assert who.can("list", "clipjobs.mememaker.io")
    assert not who.can("impersonate", "serviceaccounts")
    assert not who.can("list", "namespaces")
    # A real read of a tenant's Secret by name, as the operator would make it: refused.
    assert forbidden(who.kubectl("-n", tenant, "get", "secret", "tenant-s3"))
    assert forbidden(who.kubectl("get", "secrets", "--all-namespaces"))


def test_tenant_secrets_only_in_listed_namespaces_and_the_worker_policy_by_name(
    kube: Any,
    namespace: str,
    namespaces: Callable[[], str],
    install_rbac: Callable[[dict[str, str]], Identity],
) -> None:
    tenant, other = namespaces(), namespaces()
    for ns in (tenant, other):
        admin(kube, "-n", ns, "create", "secret", "generic", "tenant-s3", "--from-literal=k=v")
    sets = {"rbac.tenantSecretNamespaces[0]": tenant, "networkPolicy.enabled": "true"}
    who = install_rbac(sets)
    assert who.can("get", "secrets", tenant)
    assert who.kubectl("-n", tenant, "get", "secret", "tenant-s3").returncode == 0
    assert not who.can("get", "secrets", other)
    assert forbidden(who.kubectl("-n", other, "get", "secret", "tenant-s3"))
    for verb in ("list", "watch", "create", "update", "delete"):
        assert not who.can(verb, "secrets", tenant), f"can {verb} secrets in {tenant}"
    assert not who.can("get", "secrets")  # at cluster scope

    policies = "networkpolicies.networking.k8s.io"
    for ns in (namespace, other):
        assert_core_rights(who, ns)
        assert who.can("create", policies, ns)
        assert who.can("get", f"{policies}/{POLICY}", ns)
        assert who.can("patch", f"{policies}/{POLICY}", ns)
        assert not who.can("patch", f"{policies}/allow-all", ns)
        assert not who.can("get", f"{policies}/allow-all", ns)
        assert not who.can("delete", f"{policies}/{POLICY}", ns)
        assert not who.can("list", policies, ns)

    # Made as the operator makes it: the spec from CLIP_OPERATOR_WORKER_NETWORK_POLICY, created
    # by the ServiceAccount in a namespace the chart never named, read back unchanged (so the
    # operator's "differs from ours" check does not patch it on every Job), then patched.
    spec = json.loads(operator_env(who.docs)["CLIP_OPERATOR_WORKER_NETWORK_POLICY"])
    body = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": POLICY, "namespace": other},
        "spec": spec,
    }
    made = who.kubectl("create", "-f", "-", stdin=json.dumps(body))
    assert made.returncode == 0, made.stderr
    read = who.kubectl("-n", other, "get", "networkpolicy", POLICY, "-o", "json")
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout)["spec"] == spec
    patch = json.dumps({"spec": {"egress": spec["egress"][:1]}})
    patched = who.kubectl(
        "-n", other, "patch", "networkpolicy", POLICY, "--type=merge", "-p", patch
    )
    assert patched.returncode == 0, patched.stderr
    body["metadata"]["name"] = "allow-all"
    admin(kube, "create", "-f", "-", stdin=json.dumps(body))
    assert forbidden(
        who.kubectl("-n", other, "patch", "networkpolicy", "allow-all", "--type=merge", "-p", patch)
    )


def test_namespaced_install_with_tenant_secrets_reaches_nothing_else(
    kube: Any,
    namespace: str,
    namespaces: Callable[[], str],
    install_rbac: Callable[[dict[str, str]], Identity],
) -> None:
    served, other = namespaces(), namespaces()
    who = install_rbac({"watchNamespaces[0]": served, "rbac.tenantSecrets": "true"})
    assert_core_rights(who, served)
    assert who.can("get", "secrets", served)
    for ns in (other, namespace):
        assert not who.can("get", "secrets", ns)
        assert not who.can("create", "jobs.batch", ns)
        assert not who.can("list", "clipjobs.mememaker.io", ns)
    assert not who.can("list", "clipjobs.mememaker.io")
    assert not who.can("get", "secrets")
    assert not who.can("create", "networkpolicies.networking.k8s.io", served)


def test_url_policy_secret_writes_secrets_but_never_reads_them(
    kube: Any,
    namespace: str,
    namespaces: Callable[[], str],
    install_rbac: Callable[[dict[str, str]], Identity],
) -> None:
    served = namespaces()
    who = install_rbac({"operator.urlPolicy": "Secret"})
    assert_core_rights(who, served)
    assert who.can("create", "secrets", served) and who.can("update", "secrets", served)
    for verb in ("get", "list", "watch", "delete", "patch"):
        assert not who.can(verb, "secrets", served), f"can {verb} secrets"


def clip_job(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The Job the operator builds, with the settings the chart gives it."""
    from clip_operator.builders import ClipJobRef, build_job
    from clip_operator.config import load_config
    from clip_operator.models import ClipJobSpec

    spec = ClipJobSpec.model_validate(
        {"source": {"url": "https://e.com/v.mp4"}, "start": "0", "end": "5"}
    )
    config = load_config(operator_env(docs))
    job = build_job(ClipJobRef(namespace="x", name="clip", uid="u-1"), spec, config)
    del job["metadata"]["ownerReferences"], job["metadata"]["namespace"]
    return job


def hostile_jobs(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The clip Job changed in each way that would reach past the operator's own rights."""

    def changed(change: Callable[[dict[str, Any], dict[str, Any]], None]) -> dict[str, Any]:
        out = copy.deepcopy(job)
        pod = out["spec"]["template"]["spec"]
        change(pod, pod["containers"][0])
        return out

    secret_env = {"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    return {
        "image": changed(lambda p, c: c.update(image="busybox:1")),
        "secret-volume": changed(
            lambda p, c: p["volumes"].append({"name": "s", "secret": {"secretName": "s"}})
        ),
        "secret-env": changed(lambda p, c: c["env"].append(secret_env)),
        "env-from": changed(lambda p, c: c.update(envFrom=[{"secretRef": {"name": "s"}}])),
        "token": changed(lambda p, c: p.update(automountServiceAccountToken=True)),
        "service-account": changed(lambda p, c: p.update(serviceAccountName="admin")),
        "host-network": changed(lambda p, c: p.update(hostNetwork=True)),
        "init-container": changed(
            lambda p, c: p.update(initContainers=[{**c, "name": "i", "image": "busybox:1"}])
        ),
    }


def test_the_operator_may_create_clip_jobs_only(
    kube: Any,
    namespace: str,
    namespaces: Callable[[], str],
    install_rbac: Callable[[dict[str, str]], Identity],
) -> None:
    served = namespaces()
    who = install_rbac({})
    job = clip_job(who.docs)

    def create_as_operator(body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return who.kubectl(
            "-n", served, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(body)
        )

    # A new policy takes effect once the API server has loaded it: wait, bounded.
    deadline = time.monotonic() + 30
    while (
        "ValidatingAdmissionPolicy"
        not in create_as_operator(hostile_jobs(job)["secret-volume"]).stderr
    ):
        assert time.monotonic() < deadline, "the chart's ValidatingAdmissionPolicy never applied"
        time.sleep(0.5)
    policy = json.loads(
        admin(
            kube,
            "get",
            "validatingadmissionpolicy",
            f"{who.release}-clip-operator-jobs",
            "-o",
            "json",
        )
    )
    assert not (policy.get("status", {}).get("typeChecking") or {}).get("expressionWarnings")

    made = create_as_operator(job)
    assert made.returncode == 0, f"the operator's own Job was refused:\n{made.stderr}"
    for name, body in hostile_jobs(job).items():
        proc = create_as_operator(body)
        assert proc.returncode != 0, f"{name}: admitted"
        assert "ValidatingAdmissionPolicy" in proc.stderr and "clip-operator" in proc.stderr, (
            name,
            proc.stderr,
        )
    # Only the operator's identity is held to it: an administrator's Job is not.
    admin(
        kube,
        "-n",
        served,
        "create",
        "--dry-run=server",
        "-f",
        "-",
        stdin=json.dumps(hostile_jobs(job)["secret-volume"]),
    )
