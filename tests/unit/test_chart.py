"""The Helm chart charts/clip-operator, rendered by a real helm (hack/helm.sh builds it).

Lint, render with the defaults and each ci/ values file, schema refusals, and what the
rendered objects promise: least-privilege RBAC, one Recreate replica with a restricted
security context, every operator setting as its CLIP_OPERATOR_* variable, monitoring
objects made from dashboards/ untemplated. The copies in charts/clip-operator/files/ must
equal their sources (no helm needed for that one).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from clip_operator.config import ENV_PREFIX, OperatorConfig, load_config

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "clip-operator"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
WORKER_LABELS = {"app.kubernetes.io/managed-by": "clip-operator"}


@cache
def helm_binary() -> str:
    """Path of helm: $CLIP_HELM, else the one hack/helm.sh built; skip saying how to get it."""
    given = os.environ.get("CLIP_HELM")
    if given:
        return given
    proc = subprocess.run(
        [str(REPO / "hack" / "helm.sh"), "path"], capture_output=True, text=True, check=False
    )
    path = proc.stdout.strip()
    if proc.returncode != 0 or not path:
        pytest.skip(f"helm is not built: run hack/helm.sh (builds it into {path or '$CLIP_CACHE'})")
    return path


def helm(*args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def template_args(
    values: list[Path] | None = None,
    sets: dict[str, str] | None = None,
    release: str = "clip",
    namespace: str = "clip-system",
) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for path in values or []:
        args += ["--values", str(path)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


def render(
    values: list[Path] | None = None, sets: dict[str, str] | None = None, **kw: Any
) -> list[dict[str, Any]]:
    out = helm(*template_args(values, sets, **kw)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule or rule["resourceNames"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


# What the operator needs in each namespace it serves (README: Install on a cluster).
NAMESPACED_RULES = {
    ("mememaker.io", "clipjobs"): {"get", "list", "watch", "patch"},
    ("mememaker.io", "clipjobs/status"): {"patch"},
    ("mememaker.io", "clipjobs/finalizers"): {"update"},
    ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
    ("", "pods"): {"list"},
    ("", "events"): {"create"},
    ("", "secrets"): {"get"},
}


# --- files copied from outside the chart (no helm needed) ---------------------------------


def test_chart_files_equal_their_sources() -> None:
    pairs = [(CHART / "files/crds/clipjob.yaml", REPO / "crds/clipjob.yaml")]
    pairs.append((CHART / "files/alerts.yaml", REPO / "dashboards/alerts.yaml"))
    sources = sorted((REPO / "dashboards").glob("*.json"))
    copies = sorted((CHART / "files/dashboards").glob("*.json"))
    assert [p.name for p in copies] == [p.name for p in sources], "run hack/helm.sh sync"
    pairs += [(CHART / "files/dashboards" / s.name, s) for s in sources]
    stale = [str(c.relative_to(REPO)) for c, s in pairs if c.read_bytes() != s.read_bytes()]
    assert not stale, f"{stale} differ from their sources: run hack/helm.sh sync"


def test_schema_is_draft7_and_closed() -> None:
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)

    def walk(node: dict[str, Any], where: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{where} is open"
            for key, sub in node["properties"].items():
                walk(sub, f"{where}.{key}")

    walk(schema, "values")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(values)


# --- lint and render ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values", [None, *CI_VALUES], ids=["defaults", *[p.stem for p in CI_VALUES]]
)
def test_lint_strict(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["--values", str(values)] if values else [])
    proc = helm(*args, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_ci_values_cover_the_three_promised_setups() -> None:
    names = {p.stem for p in CI_VALUES}
    assert {"monitoring-values", "namespaced-values", "custom-storage-values"} <= names


def test_defaults_render_the_cluster_wide_operator() -> None:
    docs = render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    for doc in docs:
        if doc["kind"] not in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == "clip-system"


def test_deployment_is_one_recreate_replica_restricted_with_liveness() -> None:
    dep = one(render(), "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "clip-clip-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == "clip-operator:0.1.0"
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in sc
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    probe = container["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_every_operator_setting_maps_to_its_environment_variable() -> None:
    """The rendered env is read by the operator's own config loader, value for value."""
    docs = render(
        values=[CHART / "ci/custom-storage-values.yaml", CHART / "ci/namespaced-values.yaml"]
    )
    env = operator_env(docs)
    fields = {ENV_PREFIX + name.upper() for name in OperatorConfig.model_fields}
    assert {k for k in env if k.startswith(ENV_PREFIX)} == fields
    config = load_config(env)
    assert config.namespaces == ["media", "media-staging"]
    assert config.job_image == "registry.example.com/media/clip-job:1.2.3"
    assert config.job_image_pull_policy == "Always"
    assert (config.s3_bucket, config.s3_region) == ("clips", "eu-west-1")
    assert config.s3_endpoint == "http://minio.storage.svc:9000"
    assert config.s3_public_endpoint == "https://clips.example.com"
    assert config.s3_credentials_secret == "clip-s3-job"
    assert config.max_output_bytes == 5368709120  # not 5.36870912e+09
    assert config.url_refresh_fraction == 0.25 and config.in_flight_limit == 3
    assert config.allow_private_networks == ["10.50.0.0/16"]
    assert (config.job_cpu_request, config.job_cpu_limit) == ("1", "4")
    assert (config.job_memory_request, config.job_memory_limit) == ("512Mi", "2Gi")
    assert config.job_scratch_size == "10Gi"
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    secret_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
        for e in container["env"]
        if "valueFrom" in e
    }
    assert secret_refs == dict.fromkeys(
        ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"], "clip-s3-operator"
    )


def test_default_env_is_the_operators_defaults() -> None:
    env = operator_env(render())
    config = load_config(env)
    defaults = OperatorConfig()
    differs = {
        k
        for k in OperatorConfig.model_fields
        if getattr(config, k) != getattr(defaults, k) and k != "job_image"
    }
    assert not differs, f"chart defaults differ from the operator's: {differs}"
    assert config.job_image == "clip-job:0.1.0"


# --- RBAC -------------------------------------------------------------------------------------


def test_cluster_wide_rbac_is_least_privilege() -> None:
    docs = render()
    role = one(docs, "ClusterRole")
    rules = rules_of(role)
    assert rules == {
        **NAMESPACED_RULES,
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
    }
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "clip-clip-operator", "namespace": "clip-system"}
    ]
    assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding")


def test_namespaced_mode_has_a_role_per_namespace_and_nothing_cluster_wide() -> None:
    docs = render(values=[CHART / "ci/namespaced-values.yaml"])
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["media", "media-staging"]
    for role in roles:
        assert rules_of(role) == NAMESPACED_RULES
    bindings = by_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["media", "media-staging"]
    assert all(b["subjects"][0]["namespace"] == "clip-system" for b in bindings)
    assert operator_env(docs)["CLIP_OPERATOR_NAMESPACES"] == "media,media-staging"


def test_tenant_secrets_off_removes_secret_access() -> None:
    rules = rules_of(one(render(sets={"rbac.tenantSecrets": "false"}), "ClusterRole"))
    assert ("", "secrets") not in rules


def test_no_rule_grants_wildcards_pod_creation_or_secret_listing() -> None:
    for values in [None, *CI_VALUES]:
        docs = render(values=[values] if values else None)
        for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            rules = rules_of(role)
            assert not rules.get(("", "secrets"), set()) & {"list", "watch"}
            assert "create" not in rules.get(("", "pods"), set())


# --- CRD ----------------------------------------------------------------------------------------


def test_crd_is_the_repository_crd_kept_on_uninstall() -> None:
    crd = one(render(), "CustomResourceDefinition")
    source = yaml.safe_load((REPO / "crds/clipjob.yaml").read_text())
    assert crd["spec"] == source["spec"]
    assert crd["metadata"]["name"] == "clipjobs.mememaker.io"
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["metadata"]["labels"]["app.kubernetes.io/instance"] == "clip"
    no_keep = one(render(sets={"crds.keep": "false"}), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (no_keep["metadata"].get("annotations") or {})
    assert not by_kind(render(sets={"crds.enabled": "false"}), "CustomResourceDefinition")


# --- monitoring ---------------------------------------------------------------------------------


def alert_job_regex() -> re.Pattern[str]:
    rules = yaml.safe_load((REPO / "dashboards/alerts.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "ClipOperatorDown":
                found = re.search(r'job=~"([^"]+)"', rule["expr"])
                assert found
                return re.compile(found.group(1))
    raise AssertionError("no ClipOperatorDown alert")


def test_monitoring_values_render_service_monitor_rules_and_dashboards() -> None:
    docs = render(values=[CHART / "ci/monitoring-values.yaml"], release="prod")
    sm = one(docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert not by_kind(docs, "PodMonitor")
    service = one(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    # Prometheus names the job after the Service label jobLabel points at: alerts match it.
    job = service["metadata"]["labels"][sm["spec"]["jobLabel"]]
    assert alert_job_regex().fullmatch(job), job
    # The Service selects the operator Pod.
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()

    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load((REPO / "dashboards/alerts.yaml").read_text())
    assert "{{ $labels.handler }}" in json.dumps(rule["spec"])  # not templated by Helm

    maps = by_kind(docs, "ConfigMap")
    sources = {p.name: json.loads(p.read_text()) for p in (REPO / "dashboards").glob("*.json")}
    assert len(maps) == len(sources)
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "Clips"}
        ((name, text),) = cm["data"].items()
        assert json.loads(text) == sources[name]


def test_pod_monitor_with_custom_sidecar_label() -> None:
    docs = render(values=[CHART / "ci/podmonitor-values.yaml"])
    pm = one(docs, "PodMonitor")
    assert not by_kind(docs, "ServiceMonitor") and not by_kind(docs, "Service")
    assert pm["metadata"]["labels"]["release"] == "prometheus"
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert alert_job_regex().fullmatch(pod_labels[pm["spec"]["jobLabel"]])
    for cm in by_kind(docs, "ConfigMap"):
        assert cm["metadata"]["labels"]["dashboards"] == "clip"
        assert "grafana_dashboard" not in cm["metadata"]["labels"]


# --- NetworkPolicy ------------------------------------------------------------------------------


def test_worker_network_policy_blocks_cluster_and_metadata_addresses() -> None:
    docs = render(values=[CHART / "ci/namespaced-values.yaml"])
    policies = by_kind(docs, "NetworkPolicy")
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["media", "media-staging"]
    spec = policies[0]["spec"]
    assert WORKER_LABELS.items() <= spec["podSelector"]["matchLabels"].items()
    assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["ingress"] == []
    dns, internet = spec["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    blocks = [peer["ipBlock"] for peer in internet["to"]]
    for address in [
        "169.254.169.254",
        "10.96.0.1",
        "172.17.0.2",
        "192.168.1.1",
        "127.0.0.1",
        "100.64.0.1",
        "fd00:ec2::254",
        "fe80::1",
    ]:
        ip = ipaddress.ip_address(address)
        allowed = [
            b
            for b in blocks
            if ip in ipaddress.ip_network(b["cidr"])
            and not any(ip in ipaddress.ip_network(e) for e in b.get("except", []))
        ]
        assert not allowed, f"{address} is reachable through {allowed}"
    assert any(
        ipaddress.ip_address("93.184.216.34") in ipaddress.ip_network(b["cidr"]) for b in blocks
    )
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
    policy = by_kind(render(values=[CHART / "ci/namespaced-values.yaml"]), "NetworkPolicy")[0]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()


def test_network_policy_namespaces_and_s3_egress() -> None:
    docs = render(values=[CHART / "ci/custom-storage-values.yaml"])
    (policy,) = by_kind(docs, "NetworkPolicy")
    assert policy["metadata"]["namespace"] == "clip-system"  # cluster-wide: release namespace
    egress = policy["spec"]["egress"]
    s3 = egress[1]
    assert s3["to"][0]["podSelector"] == {"matchLabels": {"app": "minio"}}
    assert s3["ports"] == [{"port": 9000, "protocol": "TCP"}]
    assert egress[-1]["to"] == [{"ipBlock": {"cidr": "10.50.0.0/16"}}]
    assert not by_kind(render(), "NetworkPolicy")


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ({"operator.inFlightLimit": "-1"}, ["/operator/inFlightLimit", "minimum"]),
        ({"image.pullPolicy": "Sometimes"}, ["/image/pullPolicy", "Always"]),
        ({"operator.defaultUrlExpiresSeconds": "700000"}, ["/operator/defaultUrlExpiresSeconds"]),
        ({"replicaCount": "2"}, ["replicaCount", "additional properties"]),
        ({"storage.endpoint": "minio:9000"}, ["/storage/endpoint"]),
        ({"watchNamespaces[0]": "Media_Team"}, ["/watchNamespaces/0"]),
        ({"job.resources.limits.memory": "lots"}, ["/job/resources/limits/memory"]),
        (
            {"metrics.serviceMonitor.enabled": "true", "metrics.podMonitor.enabled": "true"},
            ["/metrics/podMonitor/enabled", "false"],
        ),
    ],
    ids=[
        "negative-limit",
        "pull-policy",
        "url-expiry",
        "unknown-key",
        "endpoint",
        "namespace",
        "quantity",
        "both-monitors",
    ],
)
def test_bad_values_are_refused_with_the_path_named(
    sets: dict[str, str], expected: list[str]
) -> None:
    proc = helm(*template_args(sets=sets), check=False)
    assert proc.returncode != 0, f"{sets} was accepted"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    for part in expected:
        assert part in proc.stderr, proc.stderr


# --- examples/gitops ----------------------------------------------------------------------------

GITOPS = REPO / "examples" / "gitops"


def gitops_docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((GITOPS / name).read_text()) if d]


def test_gitops_examples_point_at_the_chart_and_their_values_pass_its_schema(
    tmp_path: Path,
) -> None:
    argo = next(
        d
        for d in gitops_docs("argocd-application.yaml")
        if d["metadata"]["name"] == "clip-operator"
    )
    assert (REPO / argo["spec"]["source"]["path"] / "Chart.yaml").exists()
    flux = next(d for d in gitops_docs("flux-helmrelease.yaml") if d["kind"] == "HelmRelease")
    assert (REPO / flux["spec"]["chart"]["spec"]["chart"] / "Chart.yaml").exists()
    for name, values in [
        ("argocd", argo["spec"]["source"]["helm"]["valuesObject"]),
        ("flux", flux["spec"]["values"]),
    ]:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(values))
        docs = render(values=[path])  # the schema refuses unknown or bad values
        assert one(docs, "Deployment")["spec"]["replicas"] == 1


def test_gitops_clipjobs_are_valid_and_synced_by_both_tools() -> None:
    import jsonschema

    from clip_operator.models import parse_spec

    crd = yaml.safe_load((REPO / "crds/clipjob.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    kustomization = yaml.safe_load((GITOPS / "clips/kustomization.yaml").read_text())
    assert kustomization["resources"]
    for name in kustomization["resources"]:
        doc = yaml.safe_load((GITOPS / "clips" / name).read_text())
        jsonschema.validate(doc, schema)
        parse_spec(doc["spec"])
    argo = next(
        d for d in gitops_docs("argocd-application.yaml") if d["metadata"]["name"] == "media-clips"
    )
    flux = next(d for d in gitops_docs("flux-helmrelease.yaml") if d["kind"] == "Kustomization")
    assert argo["spec"]["source"]["path"] == "examples/gitops/clips"
    assert flux["spec"]["path"] == "./examples/gitops/clips" and flux["spec"]["wait"] is True


def test_packaged_chart_carries_its_files_and_renders_the_same(tmp_path: Path) -> None:
    """What users install is the .tgz: .Files must still find the CRD, rules and dashboards."""
    helm("package", str(CHART), "--destination", str(tmp_path))
    (package,) = tmp_path.glob("clip-operator-*.tgz")
    values = CHART / "ci/monitoring-values.yaml"
    from_dir = helm(*template_args([values])).stdout
    args = template_args([values])
    args[2] = str(package)
    assert helm(*args).stdout == from_dir
    kinds = {d["kind"] for d in yaml.safe_load_all(from_dir) if d}
    assert {"CustomResourceDefinition", "PrometheusRule", "ConfigMap"} <= kinds
