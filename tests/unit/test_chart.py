"""The Helm chart charts/clip-operator, rendered by a real helm (hack/helm.sh builds it).

Lint, render with the defaults and each ci/ values file, schema refusals, and what the
rendered objects promise: two replicas with leader election, rolling updates and a
PodDisruptionBudget, a restricted security context, every
operator setting as its CLIP_OPERATOR_* variable, monitoring objects made from dashboards/
untemplated (RBAC and the worker NetworkPolicy: test_chart_security.py). The copies in
charts/clip-operator/files/ must equal their sources (no helm needed for that one).
"""

from __future__ import annotations

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
    tests: bool = False,
) -> list[str]:
    # `helm install` creates no test hooks (only `helm test` does): renders leave them out.
    args = ["template", release, str(CHART), "--namespace", namespace]
    if not tests:
        args.append("--skip-tests")
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


AGGREGATE_TO_EDIT = "rbac.authorization.k8s.io/aggregate-to-edit"


def user_roles(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ClusterRoles for the cluster's users (aggregated into edit/admin), not the operator."""
    return [d for d in docs if AGGREGATE_TO_EDIT in (d["metadata"].get("labels") or {})]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The operator's objects of `kind` (the users' aggregated roles: user_roles)."""
    users = user_roles(docs)
    return [d for d in docs if d["kind"] == kind and d not in users]


LEADER = "-leader-election"  # the Role and RoleBinding for the Lease (release namespace)


def serving(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Objects of `kind` other than the leader-election Role and RoleBinding."""
    return [d for d in by_kind(docs, kind) if not d["metadata"]["name"].endswith(LEADER)]


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
    # Two ClusterRoles: the operator's and the users' (aggregated into edit and admin).
    cluster_scoped = {
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    namespaced = ["Deployment", "PodDisruptionBudget", "Role", "RoleBinding", "Service"]
    assert kinds == sorted([*cluster_scoped, "ClusterRole", *namespaced, "ServiceAccount"])
    for doc in docs:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"]["namespace"] == "clip-system"


def test_deployment_is_two_replicas_rolled_one_by_one_restricted_with_liveness() -> None:
    docs = render()
    dep = one(docs, "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 2
    # A new Pod starts before an old one stops: a standby always exists to take the Lease.
    rolling = {"maxUnavailable": 0, "maxSurge": 1}
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": rolling}
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    env = operator_env(docs)
    assert env["CLIP_OPERATOR_LEADER_ELECTION"] == "true"
    assert env["CLIP_OPERATOR_LEASE_NAMESPACE"] == "clip-system"
    assert env["CLIP_OPERATOR_LEASE_NAME"] == "clip-clip-operator"
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
    assert config.s3_allowed_endpoints == [
        "https://s3.eu-west-1.amazonaws.com",
        "http://minio.tenants.svc:9000",
    ]
    assert (config.url_policy, config.resync_seconds, config.workers) == ("None", 120, 4)
    assert config.stall_seconds == 600
    policy = config.worker_network_policy
    assert (json.loads(policy) if isinstance(policy, str) else policy) == json.loads(
        env["CLIP_OPERATOR_WORKER_NETWORK_POLICY"]
    )
    assert config.max_output_bytes == 5368709120  # not 5.36870912e+09
    assert config.url_refresh_fraction == 0.25 and config.in_flight_limit == 3
    assert config.allow_private_networks == ["10.50.0.0/16"]
    assert config.allow_ports == [8080, 8443]
    assert config.namespace_in_flight_limit == 4
    assert config.namespace_limits() == {"media": 8, "media-staging": 1}
    assert config.clipjob_ttl_seconds_after_finished == 86400
    assert config.kueue_queue_name == "clips" and config.dedupe == "Namespace"
    assert (config.job_cpu_request, config.job_cpu_limit) == ("1", "4")
    assert (config.job_memory_request, config.job_memory_limit) == ("512Mi", "2Gi")
    assert config.job_scratch_size == "10Gi"
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    secret_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert secret_refs == dict.fromkeys(
        ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"], "clip-s3-operator"
    )


def test_value_names_are_the_setting_names() -> None:
    """operator.fooBar sets CLIP_OPERATOR_FOO_BAR, storage.fooBar CLIP_OPERATOR_S3_FOO_BAR."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    env = operator_env(
        render(
            values=[CHART / "ci/custom-storage-values.yaml", CHART / "ci/namespaced-values.yaml"]
        )
    )

    def setting(prefix: str, name: str) -> str:
        return ENV_PREFIX + prefix + re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()

    missing = [
        f"operator.{k}: {setting('', k)}"
        for k in values["operator"]
        if k != "verbose" and setting("", k) not in env
    ]
    missing += [
        f"storage.{k}: {setting('S3_', k)}"
        for k in values["storage"]
        if k != "operatorCredentialsSecret" and setting("S3_", k) not in env
    ]
    missing += [
        f"notify.{k}: {setting('NOTIFY_', k)}"
        for k in values["notify"]
        if setting("NOTIFY_", k) not in env
    ]
    assert not missing, missing


def test_default_env_is_the_operators_defaults() -> None:
    env = operator_env(render())
    config = load_config(env)
    defaults = OperatorConfig()
    differs = {
        k
        for k in OperatorConfig.model_fields
        if getattr(config, k) != getattr(defaults, k)
        # The chart runs replicas, so it turns leader election on, on its release's Lease.
        and k not in ("job_image", "leader_election", "lease_name", "lease_namespace")
    }
    assert not differs, f"chart defaults differ from the operator's: {differs}"
    assert config.job_image == "clip-job:0.1.0"
    assert config.leader_election and config.lease_namespace == "clip-system"


def test_one_replica_without_leader_election_and_no_pdb_for_a_single_pod() -> None:
    single = render(sets={"replicas": "1", "leaderElection.enabled": "false"})
    assert one(single, "Deployment")["spec"]["replicas"] == 1
    assert not by_kind(single, "PodDisruptionBudget")  # minAvailable 1 would block drains
    assert operator_env(single)["CLIP_OPERATOR_LEADER_ELECTION"] == "false"
    assert not [r for r in by_kind(single, "Role") if r["metadata"]["name"].endswith(LEADER)]
    refused = helm(*template_args(None, {"leaderElection.enabled": "false"}), check=False)
    assert refused.returncode != 0
    assert "replicas > 1 needs leaderElection.enabled" in refused.stderr


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
    # The per-namespace gauges keep their `namespace` label (not exported_namespace).
    assert sm["spec"]["endpoints"][0]["honorLabels"] is True
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
    assert pm["spec"]["podMetricsEndpoints"][0]["honorLabels"] is True
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert alert_job_regex().fullmatch(pod_labels[pm["spec"]["jobLabel"]])
    for cm in by_kind(docs, "ConfigMap"):
        assert cm["metadata"]["labels"]["dashboards"] == "clip"
        assert "grafana_dashboard" not in cm["metadata"]["labels"]


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
        ({"storage.allowedEndpoints[0]": "minio:9000"}, ["/storage/allowedEndpoints/0"]),
        ({"operator.urlPolicy": "Log"}, ["/operator/urlPolicy", "Status"]),
        ({"storage.jobCredentialsSecret": "s"}, ["jobCredentialsSecret", "additional properties"]),
        ({"networkPolicy.namespaces[0]": "a"}, ["namespaces", "additional properties"]),
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
        "allowed-endpoint",
        "url-policy",
        "removed-job-credentials",
        "removed-policy-namespaces",
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
        assert one(docs, "Deployment")["spec"]["replicas"] == 2


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
