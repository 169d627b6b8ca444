"""The Helm chart on the real control plane (kube-apiserver with RBAC and PodSecurity).

- Rendered manifests pass a server-side dry run with prometheus-operator's CRDs installed.
- `helm install` into a namespace enforcing Pod Security `restricted`; the operator then runs
  under the chart's ServiceAccount (a TokenRequest token in its own kubeconfig) and completes
  the success, failure and delete flows; what that identity must not do is refused.
- `helm upgrade` with changed values and `helm uninstall` leave no orphans.

The cluster has no kubelet and no Deployment controller: the operator runs as a local
process with the chart's environment and identity, and tests/kubelet_sim.py plays the node.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.clipjobs import create, get, manifest, wait_for, wait_phase
from tests.integration.test_rbac import clip_job
from tests.kubelet_sim import job_pods, run_pod, success_message, wait_for_pod
from tests.unit.test_chart import CHART, CI_VALUES, REPO, helm_binary

pytestmark = pytest.mark.integration

CRD = "clipjobs.mememaker.io"
RBAC_DENIAL = re.compile(r'forbidden: User "system:serviceaccount:|cannot \w+ resource "')
# Unless the operator sets kopf's settings.scanning.disabled, kopf's observers list and watch
# namespaces and CRDs cluster-wide even when it serves given namespaces; a namespaced install
# grants neither, so kopf retries for about a minute, then falls back to those namespaces.
KOPF_OBSERVER_DENIAL = re.compile(
    r'cannot (list|watch) resource "(namespaces|customresourcedefinitions)" in API group '
    r'"[^"]*" at the cluster scope'
)


# --- helpers ----------------------------------------------------------------------------------


class Helm:
    """helm against the test cluster, with its own config/cache dirs."""

    def __init__(self, kube: Any, home: Path) -> None:
        self.kube = kube
        self.env = {
            **os.environ,
            "KUBECONFIG": kube.kubeconfig,
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [helm_binary(), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=180,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def manifest(self, release: str, namespace: str) -> list[dict[str, Any]]:
        out = self("get", "manifest", release, "--namespace", namespace).stdout
        return [d for d in yaml.safe_load_all(out) if d]


def sets(values: dict[str, str]) -> list[str]:
    out: list[str] = []
    for key, value in values.items():
        out += ["--set-json" if value[:1] in "[{" else "--set", f"{key}={value}"]
    return out


def kubectl(kube: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kube.kubectl, "--kubeconfig", kube.kubeconfig, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def kubectl_ok(kube: Any, *args: str, stdin: str | None = None) -> str:
    proc = kubectl(kube, *args, stdin=stdin)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}:\n{proc.stderr}"
    return proc.stdout


def token_kubeconfig(kube: Any, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig holding a TokenRequest token of the ServiceAccount (as a Pod would get)."""
    from kubernetes import client

    request = kube.core.create_namespaced_service_account_token(
        sa,
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        ),
    )
    admin = yaml.safe_load(Path(kube.kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    ca = cluster.get("certificate-authority")
    if ca and not os.path.isabs(ca):
        cluster = {**cluster, "certificate-authority": str(Path(kube.kubeconfig).parent / ca)}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": cluster}],
                "users": [{"name": sa, "user": {"token": request.status.token}}],
                "contexts": [
                    {
                        "name": sa,
                        "context": {"cluster": "local", "user": sa, "namespace": namespace},
                    }
                ],
                "current-context": sa,
            }
        )
    )
    return path


def api_as(kubeconfig: Path) -> Any:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    return client.CoreV1Api(api), client.BatchV1Api(api), client.CustomObjectsApi(api), api


def status_of(call: Any) -> int:
    from kubernetes.client.exceptions import ApiException

    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def can_i(kube: Any, kubeconfig: Path, *args: str) -> bool:
    proc = subprocess.run(
        [kube.kubectl, "--kubeconfig", str(kubeconfig), "auth", "can-i", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.stdout.strip() in ("yes", "no"), proc.stdout + proc.stderr
    return proc.stdout.strip() == "yes"


def chart_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The operator container's plain env from the installed Deployment (ports left to the test)."""
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    skip = {"CLIP_OPERATOR_METRICS_PORT", "CLIP_OPERATOR_HEALTH_PORT"}
    return {e["name"]: e["value"] for e in env if "value" in e and e["name"] not in skip}


@pytest.fixture
def helm_cli(kube: Any, tmp_path: Path) -> Helm:
    helm_binary()  # skips with instructions when helm is not built
    return Helm(kube, tmp_path / "helm")


@pytest.fixture
def release(helm_cli: Helm, namespace: str) -> Iterator[str]:
    """A release name unique to the test; uninstalled afterwards whatever happened."""
    name = f"r{uuid.uuid4().hex[:6]}"
    yield name
    helm_cli("uninstall", name, "--namespace", namespace, "--ignore-not-found", check=False)


@pytest.fixture(scope="session")
def prom_crds(kube: Any) -> None:
    if not shutil.which("go"):
        pytest.skip(
            "prometheus-operator CRDs come from its Go module: install Go, then "
            "run hack/prom-crds.sh install"
        )
    proc = subprocess.run(
        [str(REPO / "hack" / "prom-crds.sh"), "install"],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": kube.kubeconfig, "KUBECTL": kube.kubectl},
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"hack/prom-crds.sh install failed:\n{proc.stderr[-3000:]}")


@pytest.fixture
def adopt_crd(kube: Any) -> Iterator[Any]:
    """Let a release take over the ClipJob CRD that `hack/cluster up` applied; undo afterwards.

    Helm refuses to install over an object it does not own; these are the marks it checks.
    """

    def adopt(release: str, namespace: str) -> None:
        kubectl_ok(
            kube,
            "annotate",
            "--overwrite",
            f"crd/{CRD}",
            f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}",
        )
        kubectl_ok(kube, "label", "--overwrite", f"crd/{CRD}", "app.kubernetes.io/managed-by=Helm")

    yield adopt
    subprocess.run(
        [
            kube.kubectl,
            "--kubeconfig",
            kube.kubeconfig,
            "annotate",
            f"crd/{CRD}",
            "meta.helm.sh/release-name-",
            "meta.helm.sh/release-namespace-",
            "helm.sh/resource-policy-",
        ],
        capture_output=True,
        check=False,
    )
    subprocess.run(
        [
            kube.kubectl,
            "--kubeconfig",
            kube.kubeconfig,
            "label",
            f"crd/{CRD}",
            "app.kubernetes.io/managed-by-",
            "app.kubernetes.io/instance-",
            "app.kubernetes.io/version-",
            "helm.sh/chart-",
        ],
        capture_output=True,
        check=False,
    )


@pytest.fixture
def extra_namespace(kube: Any) -> Iterator[str]:
    from kubernetes import client

    name = f"clip-test-{uuid.uuid4().hex[:8]}"
    kube.core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=name,
                labels={
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "clip-operator.test": "true",
                },
            )
        )
    )
    yield name
    kube.core.delete_namespace(name)


# --- server-side dry run ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values", [None, *CI_VALUES], ids=["defaults", *[p.stem for p in CI_VALUES]]
)
def test_rendered_manifests_pass_server_side_dry_run(
    kube: Any, namespace: str, extra_namespace: str, prom_crds: None, values: Path | None
) -> None:
    # What `helm install` creates: the test hooks only exist during `helm test`.
    args = ["template", "dry", str(CHART), "--namespace", namespace, "--skip-tests"]
    if values:
        args += ["--values", str(values)]
    if values and values.stem == "namespaced-values":
        args += sets({"watchNamespaces": f'["{namespace}", "{extra_namespace}"]'})
    if values and values.stem == "custom-storage-values":
        args += sets({"rbac.tenantSecretNamespaces": f'["{extra_namespace}"]'})
    rendered = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    out = kubectl_ok(kube, "apply", "--dry-run=server", "-f", "-", stdin=rendered)
    assert out.count("(server dry run)") == len(docs), out


def test_dry_run_rejects_what_the_prometheus_operator_schema_forbids(
    kube: Any, namespace: str, prom_crds: None
) -> None:
    """The dry run really checks the monitoring objects: a bad scrapeTimeout is refused."""
    args = [
        "template",
        "dry",
        str(CHART),
        "--namespace",
        namespace,
        "--values",
        str(CHART / "ci/monitoring-values.yaml"),
        "--skip-tests",
    ]
    rendered = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ServiceMonitor"]
    docs[0]["spec"]["endpoints"][0]["scrapeTimeout"] = "ten seconds"
    proc = kubectl(kube, "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(docs[0]))
    assert proc.returncode != 0 and "scrapeTimeout" in proc.stderr, proc.stderr


# --- install, run under the chart's identity ----------------------------------------------------


def install(
    helm_cli: Helm, release: str, namespace: str, values: dict[str, str], *extra: str
) -> str:
    proc = helm_cli(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        *sets({"image.tag": "dev", "job.image.tag": "dev", **values}),
        *extra,
    )
    return proc.stdout


def operator_log(op: Any) -> str:
    return "".join(p.read_text(errors="replace") for p in op.logs if p.exists())


def pod_from_template(dep: dict[str, Any], namespace: str) -> dict[str, Any]:
    template = dep["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "operator-admission-check",
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
        },
        "spec": template["spec"],
    }


def test_namespaced_install_runs_the_operator_under_its_service_account(
    kube: Any,
    namespace: str,
    extra_namespace: str,
    helm_cli: Helm,
    release: str,
    adopt_crd: Any,
    operator_factory: Any,
    s3_server: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    from kubernetes import client

    adopt_crd(release, namespace)
    notes = install(
        helm_cli,
        release,
        namespace,
        {
            "watchNamespaces": f'["{namespace}"]',
            "rbac.tenantSecrets": "true",
            "storage.bucket": s3_bucket,
            "storage.endpoint": s3_server.endpoint,
            "operator.loopIntervalSeconds": "1",
        },
    )
    assert "first-clip" in notes and f"kubectl apply -n {namespace}" in notes, notes
    docs = helm_cli.manifest(release, namespace)
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    assert sa == f"{release}-clip-operator"

    # The operator's own Pod passes Pod Security `restricted` (enforced in this namespace).
    dep = next(d for d in docs if d["kind"] == "Deployment")
    kubectl_ok(
        kube,
        "create",
        "--dry-run=server",
        "-f",
        "-",
        stdin=yaml.safe_dump(pod_from_template(dep, namespace)),
    )

    cfg = token_kubeconfig(kube, namespace, sa, tmp_path / "sa.kubeconfig")
    op = operator_factory(
        env={
            **chart_env(docs),
            "KUBECONFIG": str(cfg),
            "AWS_ACCESS_KEY_ID": s3_server.access_key,
            "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        }
    )

    # Success, with the object uploaded to S3 and deleted with the ClipJob (finalizer).
    create(kube, namespace, manifest("ok", deletionPolicy="Delete"))
    ok = wait_for(
        "Job of ok",
        lambda: (
            kube.batch.list_namespaced_job(
                namespace, label_selector="mememaker.io/clipjob=ok"
            ).items
        ),
        timeout=150,  # kopf's retries of cluster-scoped reads delay the first watch; see below
    )[0]
    pod = wait_for_pod(kube, namespace, ok.metadata.name)  # admitted under `restricted`
    assert (
        pod.spec.security_context.run_as_non_root and not pod.spec.automount_service_account_token
    )
    result = success_message(pod, size=3)
    s3 = s3_server.client()
    s3.put_object(Bucket=s3_bucket, Key=result["key"], Body=b"abc")
    run_pod(kube, pod, 0, result)
    done = wait_phase(kube, namespace, "ok", "Succeeded")
    assert done["status"]["url"].startswith(s3_server.endpoint)
    assert "mememaker.io/delete-s3-object" in done["metadata"]["finalizers"]

    # Tenant storage: the keys come from a Secret read by name (get, never list).
    kube.core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="tenant-s3"),
            string_data={
                "AWS_ACCESS_KEY_ID": s3_server.access_key,
                "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
            },
        ),
    )
    create(
        kube,
        namespace,
        manifest("tenant", storage={"bucket": s3_bucket, "secretRef": {"name": "tenant-s3"}}),
    )
    tj = wait_for(
        "Job of tenant",
        lambda: (
            kube.batch.list_namespaced_job(
                namespace, label_selector="mememaker.io/clipjob=tenant"
            ).items
        ),
    )[0]
    tpod = wait_for_pod(kube, namespace, tj.metadata.name)
    run_pod(kube, tpod, 0, success_message(tpod))
    assert wait_phase(kube, namespace, "tenant", "Succeeded")["status"]["url"]

    # Permanent failure.
    create(kube, namespace, manifest("gone"))
    gj = wait_for(
        "Job of gone",
        lambda: (
            kube.batch.list_namespaced_job(
                namespace, label_selector="mememaker.io/clipjob=gone"
            ).items
        ),
    )[0]
    gpod = wait_for_pod(kube, namespace, gj.metadata.name)
    run_pod(kube, gpod, 3, {"reason": "SourceNotFound", "message": "HTTP 404"})
    failed = wait_phase(kube, namespace, "gone", "Failed")
    assert failed["status"]["reason"] == "SourceNotFound"
    assert len(job_pods(kube, namespace, gj.metadata.name)) == 1

    # Delete: the S3 object goes (finalizer patch), the Job and Pod go through GC.
    kube.custom.delete_namespaced_custom_object(
        "mememaker.io", "v1alpha1", namespace, "clipjobs", "ok"
    )

    def ok_gone() -> bool:
        try:
            get(kube, namespace, "ok")
            return False
        except Exception:
            return True

    wait_for("ClipJob ok deleted", ok_gone, timeout=60)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert result["key"] not in keys
    wait_for(
        "Job of ok gone",
        lambda: (
            not kube.batch.list_namespaced_job(
                namespace, label_selector="mememaker.io/clipjob=ok"
            ).items
        ),
    )

    log = operator_log(op)
    denials = [line for line in log.splitlines() if RBAC_DENIAL.search(line)]
    unexpected = [line for line in denials if not KOPF_OBSERVER_DENIAL.search(line)]
    assert not unexpected, "\n".join(unexpected)
    if denials:
        warnings.warn(
            f"kopf was refused {len(denials)} cluster-scoped namespace/CRD reads and started "
            "serving only after its retries: the operator should set "
            "settings.scanning.disabled = True",
            stacklevel=1,
        )

    # What the identity must not do.
    core, _batch, custom, _ = api_as(cfg)
    assert status_of(lambda: core.list_namespaced_secret(namespace)) == 403
    assert (
        status_of(lambda: core.list_namespaced_secret(namespace, watch=True, timeout_seconds=1))
        == 403
    )
    assert status_of(lambda: core.read_namespaced_secret("tenant-s3", namespace)) == 200
    pod_body = pod_from_template(dep, namespace)
    assert status_of(lambda: core.create_namespaced_pod(namespace, pod_body)) == 403
    assert (
        status_of(lambda: core.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}}))
        == 403
    )
    assert status_of(lambda: core.delete_namespaced_service_account(sa, namespace)) == 403
    assert (
        status_of(
            lambda: custom.create_namespaced_custom_object(
                "mememaker.io", "v1alpha1", namespace, "clipjobs", manifest("mine")
            )
        )
        == 403
    )
    # Deleting ClipJobs is allowed: a finished one past its ttlSecondsAfterFinished.
    assert (
        status_of(
            lambda: custom.delete_namespaced_custom_object(
                "mememaker.io", "v1alpha1", namespace, "clipjobs", "never-made"
            )
        )
        == 404
    )
    assert not can_i(kube, cfg, "patch", "deployments", "-n", namespace)
    assert not can_i(kube, cfg, "update", "roles", "-n", namespace)
    assert not can_i(kube, cfg, "create", "pods", "--subresource=exec", "-n", namespace)
    assert not can_i(kube, cfg, "list", "namespaces")
    # Nothing outside the watched namespace: not even reading ClipJobs or Jobs.
    assert not can_i(kube, cfg, "list", "clipjobs.mememaker.io", "-n", extra_namespace)
    assert not can_i(kube, cfg, "create", "jobs.batch", "-n", extra_namespace)
    assert not can_i(kube, cfg, "get", "secrets", "-n", extra_namespace)
    assert not can_i(kube, cfg, "list", "clipjobs.mememaker.io", "--all-namespaces")
    # ... and what it needs, it has.
    for verb, resource in [
        ("watch", "clipjobs.mememaker.io"),
        ("patch", "clipjobs.mememaker.io --subresource=status"),
        ("delete", "jobs.batch"),
        ("list", "pods"),
        ("create", "events"),
        ("create", "events.events.k8s.io"),
    ]:
        assert can_i(kube, cfg, verb, *resource.split(), "-n", namespace), (verb, resource)


def test_tenant_secret_outside_the_listed_namespaces_fails_saying_what_to_set(
    kube: Any,
    namespace: str,
    extra_namespace: str,
    helm_cli: Helm,
    release: str,
    operator_factory: Any,
    s3_server: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    """The operator serves two namespaces; rbac.tenantSecretNamespaces lists one. A ClipJob
    naming its own Secret there gets its Job; in the other it fails SecretForbidden, and the
    message names the value to set."""
    from kubernetes import client

    served = [namespace, extra_namespace]
    install(
        helm_cli,
        release,
        namespace,
        {
            "crds.enabled": "false",
            "watchNamespaces": json.dumps(served),
            "rbac.tenantSecretNamespaces": json.dumps([namespace]),
            "storage.bucket": s3_bucket,
            "storage.endpoint": s3_server.endpoint,
        },
    )
    docs = helm_cli.manifest(release, namespace)
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    cfg = token_kubeconfig(kube, namespace, sa, tmp_path / "sa.kubeconfig")
    operator_factory(env={**chart_env(docs), "KUBECONFIG": str(cfg)}, namespaces=served)
    storage = {"bucket": s3_bucket, "secretRef": {"name": "tenant-s3"}}
    for ns in served:
        kube.core.create_namespaced_secret(
            ns,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="tenant-s3"),
                string_data={
                    "AWS_ACCESS_KEY_ID": s3_server.access_key,
                    "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
                },
            ),
        )
        create(kube, ns, manifest("tenant", storage=storage))
    status = wait_phase(kube, extra_namespace, "tenant", "Failed")["status"]
    assert status["reason"] == "SecretForbidden", status
    assert "rbac.tenantSecretNamespaces" in status["message"], status
    selector = "mememaker.io/clipjob=tenant"
    wait_for(
        "Job of tenant in the listed namespace",
        lambda: kube.batch.list_namespaced_job(namespace, label_selector=selector).items,
    )
    assert not kube.batch.list_namespaced_job(extra_namespace, label_selector=selector).items


def test_cluster_wide_identity_makes_the_operators_calls_in_any_namespace_and_no_more(
    kube: Any, namespace: str, extra_namespace: str, helm_cli: Helm, release: str, tmp_path: Path
) -> None:
    """Default mode: one ClusterRole. Each API call the operator makes cluster-wide, made with
    the chart's token; the operator itself is not run cluster-wide here, since on a shared
    control plane it would take over every other test's ClipJobs."""
    from kubernetes import client, watch

    install(helm_cli, release, namespace, {"crds.enabled": "false", "storage.bucket": "clips"})
    docs = helm_cli.manifest(release, namespace)
    assert {d["kind"] for d in docs} >= {"ClusterRole", "ClusterRoleBinding"}
    assert "CLIP_OPERATOR_NAMESPACES" not in chart_env(docs)
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    cfg = token_kubeconfig(kube, namespace, sa, tmp_path / "sa.kubeconfig")
    core, batch, custom, api = api_as(cfg)
    ext = client.ApiextensionsV1Api(api)
    group = ("mememaker.io", "v1alpha1")

    # What kopf and the operator do at start and while running, cluster-wide.
    assert ext.read_custom_resource_definition(CRD).metadata.name == CRD  # start-up check
    assert ext.list_custom_resource_definition(limit=1).items  # kopf's resource observer
    custom.list_cluster_custom_object(*group, "clipjobs", limit=1)
    batch.list_job_for_all_namespaces(label_selector="app.kubernetes.io/managed-by=clip-operator")
    for stream in (
        lambda **kw: custom.list_cluster_custom_object(*group, "clipjobs", **kw),
        lambda **kw: batch.list_job_for_all_namespaces(**kw),
        lambda **kw: ext.list_custom_resource_definition(**kw),
    ):
        for _ in watch.Watch().stream(stream, timeout_seconds=1):
            break

    # In a namespace it has never been told about: one ClipJob's whole life.
    create(kube, extra_namespace, manifest("far"))
    # The Job the operator builds with the chart's settings: the chart's admission policy
    # refuses any other Job from this identity (tests/integration/test_rbac.py).
    job = clip_job(docs)
    job["metadata"]["name"] = "far-clip"
    made = batch.create_namespaced_job(extra_namespace, job, dry_run="All")
    assert made.metadata.name == "far-clip"
    core.list_namespaced_pod(
        extra_namespace, label_selector="batch.kubernetes.io/job-name=far-clip"
    )
    custom.patch_namespaced_custom_object_status(
        *group, extra_namespace, "clipjobs", "far", {"status": {"phase": "Queued"}}
    )
    assert get(kube, extra_namespace, "far")["status"]["phase"] == "Queued"
    core.create_namespaced_event(
        extra_namespace,
        {
            "metadata": {"name": f"far.{uuid.uuid4().hex[:8]}"},
            "involvedObject": {"kind": "ClipJob", "name": "far", "namespace": extra_namespace},
            "reason": "Check",
            "message": "RBAC check",
            "type": "Normal",
        },
    )
    kube.core.create_namespaced_secret(
        extra_namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="tenant"), string_data={"k": "v"}),
    )

    # And no more: not even one Secret by name (issue 12: no cluster-wide Secret reads).
    assert status_of(lambda: core.read_namespaced_secret("tenant", extra_namespace)) == 403
    assert status_of(lambda: core.list_secret_for_all_namespaces()) == 403
    assert status_of(lambda: core.list_namespaced_secret(extra_namespace)) == 403
    assert not can_i(kube, cfg, "watch", "secrets", "-n", extra_namespace)
    assert (
        status_of(
            lambda: core.create_namespaced_pod(
                extra_namespace,
                {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
            )
        )
        == 403
    )
    assert status_of(lambda: core.list_namespace()) == 403
    assert status_of(lambda: ext.delete_custom_resource_definition(CRD)) == 403
    assert (
        status_of(
            lambda: custom.create_namespaced_custom_object(
                *group, extra_namespace, "clipjobs", manifest("mine")
            )
        )
        == 403
    )
    assert not can_i(kube, cfg, "create", "clusterroles")
    assert not can_i(kube, cfg, "update", "deployments", "-n", namespace)
    assert not can_i(kube, cfg, "create", "configmaps", "-n", extra_namespace)
    assert not can_i(kube, cfg, "impersonate", "serviceaccounts")
    helm_cli("uninstall", release, "--namespace", namespace, "--wait")
    # The binding went with the release (and the ServiceAccount, so soon the token too).
    assert status_of(lambda: custom.list_cluster_custom_object(*group, "clipjobs")) in (401, 403)


ORPHAN_KINDS = (
    "deployments,replicasets,services,serviceaccounts,configmaps,secrets,roles,rolebindings,"
    "networkpolicies,servicemonitors,podmonitors,prometheusrules,poddisruptionbudgets"
)


def leftovers(kube: Any, release: str) -> list[str]:
    """Everything still labelled as part of the release, in any namespace or cluster-wide."""
    selector = f"app.kubernetes.io/instance={release}"
    names = kubectl_ok(
        kube, "get", ORPHAN_KINDS, "--all-namespaces", "-l", selector, "-o", "name"
    ).split()
    names += kubectl_ok(
        kube,
        "get",
        "clusterroles,clusterrolebindings,customresourcedefinitions,"
        "validatingadmissionpolicies,validatingadmissionpolicybindings",
        "-l",
        selector,
        "-o",
        "name",
    ).split()
    # Helm's own release records.
    names += kubectl_ok(
        kube, "get", "secrets", "--all-namespaces", "-l", f"owner=helm,name={release}", "-o", "name"
    ).split()
    return sorted(names)


def test_upgrade_and_uninstall_leave_no_orphans(
    kube: Any,
    namespace: str,
    extra_namespace: str,
    helm_cli: Helm,
    release: str,
    adopt_crd: Any,
    prom_crds: None,
    tmp_path: Path,
) -> None:
    full = f"{release}-clip-operator"
    adopt_crd(release, namespace)
    install(
        helm_cli,
        release,
        namespace,
        {
            "networkPolicy.enabled": "true",
            "rbac.tenantSecretNamespaces": f'["{extra_namespace}"]',
        },
        "--values",
        str(CHART / "ci/monitoring-values.yaml"),
    )
    before = leftovers(kube, release)
    for expected in [
        f"servicemonitor.monitoring.coreos.com/{full}",
        f"prometheusrule.monitoring.coreos.com/{full}",
        f"service/{full}-metrics",
        f"clusterrole.rbac.authorization.k8s.io/{full}",
        "customresourcedefinition.apiextensions.k8s.io/clipjobs.mememaker.io",
        f"role.rbac.authorization.k8s.io/{full}-tenant-secrets",
        f"validatingadmissionpolicy.admissionregistration.k8s.io/{full}-jobs",
    ]:
        assert expected in before, before
    # The operator, not the chart, creates the worker NetworkPolicy where Jobs run.
    assert not [n for n in before if n.startswith("networkpolicy")], before
    assert sum(n.startswith("configmap/") for n in before) == 2  # the two dashboards
    sa = full
    cfg = token_kubeconfig(kube, namespace, sa, tmp_path / "sa.kubeconfig")
    assert can_i(kube, cfg, "get", "secrets", "-n", extra_namespace)
    assert not can_i(kube, cfg, "get", "secrets", "-n", namespace)
    assert can_i(kube, cfg, "create", "networkpolicies.networking.k8s.io", "-n", extra_namespace)

    # Upgrade: PodMonitor instead of ServiceMonitor + Service, no dashboards, no worker
    # NetworkPolicy, no tenant Secrets, a new in-flight limit.
    helm_cli(
        "upgrade",
        release,
        str(CHART),
        "--namespace",
        namespace,
        *sets(
            {
                "image.tag": "dev",
                "job.image.tag": "dev",
                "metrics.service.enabled": "false",
                "metrics.podMonitor.enabled": "true",
                "prometheusRule.enabled": "true",
                "operator.inFlightLimit": "3",
            }
        ),
    )
    after = leftovers(kube, release)
    gone = set(before) - set(after)
    assert f"servicemonitor.monitoring.coreos.com/{full}" in gone
    assert f"service/{full}-metrics" in gone
    assert not [n for n in after if n.startswith("configmap/")], after
    assert f"podmonitor.monitoring.coreos.com/{full}" in after
    assert f"role.rbac.authorization.k8s.io/{full}-tenant-secrets" in gone
    env = {e["name"]: e.get("value") for e in kube_deployment_env(kube, namespace, full)}
    assert env["CLIP_OPERATOR_IN_FLIGHT_LIMIT"] == "3"
    assert "CLIP_OPERATOR_WORKER_NETWORK_POLICY" not in env
    assert not can_i(kube, cfg, "get", "secrets", "-n", extra_namespace)  # RBAC updated in place
    assert not can_i(kube, cfg, "create", "networkpolicies.networking.k8s.io", "-n", namespace)

    helm_cli("uninstall", release, "--namespace", namespace, "--wait")
    remaining = leftovers(kube, release)
    # Only the CRD stays (crds.keep): deleting it would delete every ClipJob.
    assert remaining == ["customresourcedefinition.apiextensions.k8s.io/clipjobs.mememaker.io"], (
        remaining
    )
    assert release not in helm_cli("list", "--all-namespaces", "--short").stdout.split()
    _core, _batch, custom, _ = api_as(cfg)
    refused = status_of(
        lambda: custom.list_namespaced_custom_object(
            "mememaker.io", "v1alpha1", namespace, "clipjobs"
        )
    )
    assert refused in (401, 403)  # no Role left, and soon no ServiceAccount for the token


def kube_deployment_env(kube: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    dep = kube.api.sanitize_for_serialization(
        __import__("kubernetes")
        .client.AppsV1Api(kube.api)
        .read_namespaced_deployment(name, namespace)
    )
    return list(dep["spec"]["template"]["spec"]["containers"][0]["env"])
