"""What the chart grants the operator and what it tells the operator to enforce on workers.

Rendered by a real helm (hack/helm.sh). RBAC: no cluster-wide Secret reads in any setup,
tenant Secrets only through Roles in listed namespaces, rights added by each option and
nothing else; the README's table of rights is generated from these renders and must match.
The worker NetworkPolicy: not rendered by the chart (workers run in the ClipJobs'
namespaces) but handed to the operator as CLIP_OPERATOR_WORKER_NETWORK_POLICY, with the
metadata, private, NAT64, 6to4 and Teredo ranges excepted. tests/integration/test_rbac.py
checks the same rights on a real API server.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import pytest

from clip_operator.config import OperatorConfig
from tests.unit.test_chart import (
    CHART,
    CI_VALUES,
    REPO,
    WORKER_LABELS,
    by_kind,
    helm,
    one,
    operator_env,
    render,
    rules_of,
    serving,
    template_args,
)


def roles(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return by_kind(docs, "ClusterRole") + by_kind(docs, "Role")


def worker_policy(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The NetworkPolicy spec the operator is told to create in each namespace it runs Jobs in."""
    spec: dict[str, Any] = json.loads(operator_env(docs)["CLIP_OPERATOR_WORKER_NETWORK_POLICY"])
    return spec


# What the operator needs in each namespace it serves, with the default values (README:
# Install on a cluster). No Secrets at all.
NAMESPACED_RULES = {
    # delete: a finished ClipJob past its ttlSecondsAfterFinished is deleted by the operator.
    ("mememaker.io", "clipjobs"): {"get", "list", "watch", "patch", "delete"},
    ("mememaker.io", "clipjobs/status"): {"patch"},
    ("mememaker.io", "clipjobs/finalizers"): {"update"},
    ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
    ("", "pods"): {"list", "watch"},
    ("", "events"): {"create", "list"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
SECRET_GET = {("", "secrets"): {"get"}}
POLICY_RULES = {("networking.k8s.io", "networkpolicies"): {"create", "get", "patch"}}


# --- RBAC -------------------------------------------------------------------------------------


def lease_role(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (role,) = [r for r in by_kind(docs, "Role") if r not in serving(docs, "Role")]
    return role


def notify_role(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-notify-secret")]
    return role


def test_the_default_webhook_key_is_the_only_secret_read_in_the_release_namespace() -> None:
    docs = render(release="clip", namespace="clip-system", sets={"notify.secret": "hook-key"})
    role = notify_role(docs)
    assert role["metadata"]["namespace"] == "clip-system"
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["hook-key"],
            "verbs": ["get"],
        }
    ]
    assert operator_env(docs)["CLIP_OPERATOR_NOTIFY_SECRET"] == "clip-system/hook-key"
    assert not [
        r for r in by_kind(render(), "Role") if r["metadata"]["name"].endswith("-notify-secret")
    ]


def test_leader_election_may_touch_only_its_own_lease_in_the_release_namespace() -> None:
    docs = render(release="clip", namespace="clip-system")
    role = lease_role(docs)
    assert role["metadata"]["namespace"] == "clip-system"
    # create cannot be limited by name (authorized before the object exists); the rest is.
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["clip-clip-operator"],
            "verbs": ["get", "update"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]
    (binding,) = [b for b in by_kind(docs, "RoleBinding") if b not in serving(docs, "RoleBinding")]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "clip-clip-operator", "namespace": "clip-system"}
    ]
    assert operator_env(docs)["CLIP_OPERATOR_LEASE_NAME"] == "clip-clip-operator"
    # A namespaced install gets the same Role in the release namespace, not in the served ones.
    namespaced = render(values=[CHART / "ci/namespaced-values.yaml"])
    assert lease_role(namespaced)["metadata"]["namespace"] == "clip-system"


def test_cluster_wide_rbac_is_least_privilege_with_no_secrets_rule() -> None:
    docs = render()
    role = one(docs, "ClusterRole")
    assert rules_of(role) == {
        **NAMESPACED_RULES,
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
    }
    assert not [r for r in role["rules"] if "secrets" in r["resources"]]
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "clip-clip-operator", "namespace": "clip-system"}
    ]
    assert not serving(docs, "Role") and not serving(docs, "RoleBinding")


def test_namespaced_mode_has_a_role_per_namespace_and_nothing_cluster_wide() -> None:
    docs = render(values=[CHART / "ci/namespaced-values.yaml"])
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    roles_ = serving(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles_) == ["media", "media-staging"]
    for role in roles_:  # tenantSecrets: true and the worker NetworkPolicy on
        assert rules_of(role) == {**NAMESPACED_RULES, **SECRET_GET, **POLICY_RULES}
    bindings = serving(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["media", "media-staging"]
    assert all(b["subjects"][0]["namespace"] == "clip-system" for b in bindings)
    assert operator_env(docs)["CLIP_OPERATOR_NAMESPACES"] == "media,media-staging"
    plain = render(sets={"watchNamespaces[0]": "media"})
    (role,) = serving(plain, "Role")
    assert rules_of(role) == NAMESPACED_RULES


def test_tenant_secrets_are_read_through_roles_in_listed_namespaces_only() -> None:
    docs = render(sets={"rbac.tenantSecretNamespaces[0]": "team-a"})
    assert ("", "secrets") not in rules_of(one(docs, "ClusterRole"))
    (role,) = serving(docs, "Role")
    assert role["metadata"] == {**role["metadata"], "namespace": "team-a"}
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    (binding,) = serving(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == "team-a"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"][0]["name"] == "clip-clip-operator"


def test_tenant_secrets_serving_all_namespaces_is_refused_with_what_to_do() -> None:
    proc = helm(*template_args(sets={"rbac.tenantSecrets": "true"}), check=False)
    assert proc.returncode != 0
    assert "rbac.tenantSecrets needs watchNamespaces" in proc.stderr, proc.stderr
    assert "rbac.tenantSecretNamespaces" in proc.stderr


def test_url_policy_secret_adds_create_and_update_on_secrets_never_read() -> None:
    rules = rules_of(one(render(sets={"operator.urlPolicy": "Secret"}), "ClusterRole"))
    assert rules[("", "secrets")] == {"create", "update"}
    for policy in ("Status", "None"):
        rules = rules_of(one(render(sets={"operator.urlPolicy": policy}), "ClusterRole"))
        assert ("", "secrets") not in rules


def test_network_policy_rights_only_when_enabled_and_by_name() -> None:
    assert ("networking.k8s.io", "networkpolicies") not in rules_of(one(render(), "ClusterRole"))
    role = one(render(sets={"networkPolicy.enabled": "true"}), "ClusterRole")
    policy_rules = [r for r in role["rules"] if r["resources"] == ["networkpolicies"]]
    assert policy_rules == [
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["create"]},
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["networkpolicies"],
            "resourceNames": ["clip-worker-egress"],
            "verbs": ["get", "patch"],
        },
    ]


ALL_OPTIONS = {
    "networkPolicy.enabled": "true",
    "operator.urlPolicy": "Secret",
    "rbac.tenantSecretNamespaces[0]": "team-a",
}


@pytest.mark.parametrize(
    "values", [None, *CI_VALUES], ids=["defaults", *[p.stem for p in CI_VALUES]]
)
def test_no_rule_grants_wildcards_pods_secret_listing_or_cluster_wide_secret_reads(
    values: Path | None,
) -> None:
    for sets in ({}, ALL_OPTIONS):
        docs = render(values=[values] if values else None, sets=sets)
        for role in roles(docs):
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            rules = rules_of(role)
            assert not rules.get(("", "secrets"), set()) & {"list", "watch"}
            assert not rules.get(("", "pods"), set()) - {"list", "watch"}
            # The operator never creates ClipJobs (delete: their TTL after finishing).
            assert "create" not in rules.get(("mememaker.io", "clipjobs"), set())
        for role in by_kind(docs, "ClusterRole"):
            assert "get" not in rules_of(role).get(("", "secrets"), set())


def test_job_admission_policy_holds_only_the_operator_to_the_job_image() -> None:
    docs = render(values=[CHART / "ci/custom-storage-values.yaml"], release="prod")
    policy = one(docs, "ValidatingAdmissionPolicy")
    binding = one(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    assert policy["spec"]["failurePolicy"] == "Fail"
    (condition,) = policy["spec"]["matchConditions"]
    user = "system:serviceaccount:clip-system:prod-clip-operator"
    assert condition["expression"] == f"request.userInfo.username == '{user}'"
    image = operator_env(docs)["CLIP_OPERATOR_JOB_IMAGE"]
    assert f"c.image == '{image}'" in policy["spec"]["validations"][0]["expression"]
    off = render(sets={"jobAdmissionPolicy.enabled": "false"})
    assert not by_kind(off, "ValidatingAdmissionPolicy")
    assert not by_kind(off, "ValidatingAdmissionPolicyBinding")


# The README's and the chart README's table of the operator's rights, generated from renders.
RBAC_TABLE_BEGIN = (
    "<!-- rbac-table: generated from the rendered chart; tests/unit/test_chart_security.py -->"
)
RBAC_TABLE_END = "<!-- end rbac-table -->"


def _rule_rows(role: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for rule in role["rules"]:
        group = ", ".join(f"`{g}`" if g else "core" for g in rule["apiGroups"])
        what = ", ".join(f"`{r}`" for r in rule["resources"])
        if rule.get("resourceNames"):
            what += " named " + ", ".join(f"`{n}`" for n in rule["resourceNames"])
        rows.append((group, what, ", ".join(rule["verbs"])))
    return rows


def rbac_table() -> str:
    """Every rule the chart can give the operator, and which values give it."""
    cluster = _rule_rows(one(render(), "ClusterRole"))
    namespaced = _rule_rows(serving(render(sets={"watchNamespaces[0]": "a"}), "Role")[0])
    out = [(*row, "always" if row in namespaced else "serving all namespaces") for row in cluster]
    for when, sets in [
        ("`networkPolicy.enabled`", {"networkPolicy.enabled": "true"}),
        ("`operator.urlPolicy: Secret`", {"operator.urlPolicy": "Secret"}),
    ]:
        rows = _rule_rows(one(render(sets=sets), "ClusterRole"))
        out += [(*row, when) for row in rows if row not in cluster]
    tenant = _rule_rows(serving(render(sets={"rbac.tenantSecretNamespaces[0]": "t"}), "Role")[0])
    own = render(sets={"watchNamespaces[0]": "a", "rbac.tenantSecrets": "true"})
    assert [r for r in _rule_rows(serving(own, "Role")[0]) if r not in namespaced] == tenant
    when = (
        "a Role in each of `rbac.tenantSecretNamespaces`; "
        "with `watchNamespaces`, `rbac.tenantSecrets`"
    )
    out += [(*row, when) for row in tenant]
    lease = _rule_rows(lease_role(render()))
    out += [
        (*row, "`leaderElection.enabled` (default): a Role in the release namespace")
        for row in lease
    ]
    out += [
        (*row, "`notify.secret`: a Role in the release namespace")
        for row in _rule_rows(notify_role(render(sets={"notify.secret": "hook-key"})))
    ]
    lines = ["| API group | resource | verbs | granted |", "| --- | --- | --- | --- |"]
    lines += [f"| {g} | {r} | {v} | {w} |" for g, r, v, w in out]
    return "\n".join([RBAC_TABLE_BEGIN, *lines, RBAC_TABLE_END])


@pytest.mark.parametrize("doc", ["README.md", "charts/clip-operator/README.md"])
def test_readme_lists_exactly_the_rendered_rbac(doc: str) -> None:
    text = (REPO / doc).read_text()
    expected = rbac_table()
    assert text.count(RBAC_TABLE_BEGIN) == 1, f"{doc} has no generated RBAC table"
    found = text[text.index(RBAC_TABLE_BEGIN) : text.index(RBAC_TABLE_END) + len(RBAC_TABLE_END)]
    assert found == expected, f"{doc}: replace its RBAC table with:\n{expected}"


# --- NetworkPolicy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values", [None, *CI_VALUES], ids=["defaults", *[p.stem for p in CI_VALUES]]
)
def test_chart_renders_no_network_policy_itself(values: Path | None) -> None:
    """Workers run in the ClipJobs' namespaces: the operator creates the policy there."""
    docs = render(values=[values] if values else None, sets={"networkPolicy.enabled": "true"})
    assert not by_kind(docs, "NetworkPolicy")
    assert "CLIP_OPERATOR_WORKER_NETWORK_POLICY" in operator_env(docs)
    assert "CLIP_OPERATOR_WORKER_NETWORK_POLICY" not in operator_env(render())


BLOCKED = [
    "0.1.2.3",
    "10.96.0.1",
    "100.64.0.1",
    "127.0.0.1",
    "169.254.169.254",
    "172.17.0.2",
    "192.168.1.1",
    "::1",
    "::ffff:169.254.169.254",  # IPv4-mapped: IPv4 on the wire
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001:0:a9fe:a9fe::1",  # Teredo
    "fd00:ec2::254",  # EC2's IPv6 metadata address
    "fe80::1",
]


def reachable(spec: dict[str, Any], address: str, port: int) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # the kernel sends ::ffff:a.b.c.d as IPv4
    for rule in spec["egress"]:
        if "ports" in rule and port not in {p["port"] for p in rule["ports"]}:
            continue
        for peer in rule["to"]:
            block = peer.get("ipBlock")
            if (
                block
                and ip in ipaddress.ip_network(block["cidr"])
                and not any(ip in ipaddress.ip_network(e) for e in block.get("except", []))
            ):
                return True
    return False


def test_worker_network_policy_blocks_cluster_metadata_and_translated_addresses() -> None:
    spec = worker_policy(render(sets={"networkPolicy.enabled": "true"}))
    assert WORKER_LABELS.items() <= spec["podSelector"]["matchLabels"].items()
    assert spec["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in spec  # none allowed
    dns, internet = spec["egress"]
    assert {p["port"] for p in dns["ports"]} == {53} and "ipBlock" not in dns["to"][0]
    for address in BLOCKED:
        assert not reachable(spec, address, 443), f"{address} is reachable"
    for address in ["93.184.216.34", "2606:4700::6810:85e5"]:
        assert reachable(spec, address, 443) and reachable(spec, address, 80)
        assert not reachable(spec, address, 22), "only ports 80 and 443"
    assert {p["port"] for p in internet["ports"]} == {80, 443}


def test_worker_pods_the_operator_builds_match_the_network_policy() -> None:
    from clip_operator.builders import ClipJobRef, build_job
    from clip_operator.models import ClipJobSpec

    spec = ClipJobSpec.model_validate(
        {"source": {"url": "https://e.com/v.mp4"}, "start": "0", "end": "5"}
    )
    job = build_job(
        ClipJobRef(namespace="media", name="x", uid="u-1"), spec, OperatorConfig(s3_bucket="b")
    )
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    policy = worker_policy(render(values=[CHART / "ci/namespaced-values.yaml"]))
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()


def test_network_policy_s3_and_extra_egress() -> None:
    egress = worker_policy(render(values=[CHART / "ci/custom-storage-values.yaml"]))["egress"]
    s3 = egress[1]
    assert s3["to"][0]["podSelector"] == {"matchLabels": {"app": "minio"}}
    assert s3["ports"] == [{"port": 9000, "protocol": "TCP"}]
    assert egress[-1]["to"] == [{"ipBlock": {"cidr": "10.50.0.0/16"}}]


def test_security_doc_cites_only_tests_that_exist() -> None:
    """docs/security.md names the test behind each claim; a renamed test must not leave it stale."""
    doc = (REPO / "docs/security.md").read_text()
    cited = set(re.findall(r"(tests/[\w/]+\.py)::(test_\w+)", doc))
    cited |= {("", name) for name in re.findall(r"`(test_\w+)`", doc)}
    assert len(cited) >= 10
    sources = {str(p.relative_to(REPO)): p.read_text() for p in (REPO / "tests").rglob("test_*.py")}
    missing = [
        f"{path}::{name}"
        for path, name in sorted(cited)
        if not any(
            re.search(rf"^def {name}\(", text, re.M)
            for where, text in sources.items()
            if not path or where == path
        )
    ]
    assert not missing, f"docs/security.md cites tests that do not exist: {missing}"
