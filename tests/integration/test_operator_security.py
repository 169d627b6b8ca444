"""The operator's side of least privilege, on the real control plane and the real S3 server.

- Worker Pods get presigned URLs for the exact key and nothing else: no keys, no Secret.
- A tenant endpoint must be on the operator's allow-list and resolve to an allowed address.
- The worker NetworkPolicy is created by the operator in the ClipJob's namespace, before
  the Job (the chart's copy in the release namespace protected nothing).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.clipjobs import create, manifest, wait_phase
from tests.integration.test_operator import job_for, jobs_of, start_with_s3

pytestmark = pytest.mark.integration

POLICY = {
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "clip-worker"}},
    "policyTypes": ["Ingress", "Egress"],
    "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}}]}],
}


def env_of(job: Any) -> dict[str, Any]:
    return {e.name: e for e in job.spec.template.spec.containers[0].env}


def put(url: str, data: bytes, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=data, method="PUT", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(resp.status)


def test_worker_pod_holds_no_keys_only_working_urls_for_its_own_key(
    kube: Any, namespace: str, operator_factory: Any, s3_server: Any, s3_bucket: str
) -> None:
    start_with_s3(operator_factory, s3_server, s3_bucket)
    create(kube, namespace, manifest("nokeys"))
    job = job_for(kube, namespace, "nokeys")
    env = env_of(job)
    pod_spec = json.dumps(kube.api.sanitize_for_serialization(job.spec.template))
    assert not [n for n in env if n.startswith("AWS_")], "no credentials in the Pod"
    assert "secretKeyRef" not in pod_spec and "secretName" not in pod_spec
    assert s3_server.secret_key not in pod_spec
    # The access key id is public (every presigned URL names it); nothing else carries it.
    assert pod_spec.count(s3_server.access_key) == 2  # X-Amz-Credential of the two URLs
    key = env["CLIP_S3_KEY"].value
    url = env["CLIP_UPLOAD_URL"].value
    assert urlsplit(url).path == f"/{s3_bucket}/{key}"  # exactly this object
    headers = json.loads(env["CLIP_UPLOAD_HEADERS"].value)
    assert put(url, b"clip!", headers) == 200
    result = json.dumps({"key": key, "sizeBytes": 5}).encode()
    assert put(env["CLIP_RESULT_URL"].value, result, {"Content-Type": "application/json"}) == 200
    obj = s3_server.client().get_object(Bucket=s3_bucket, Key=key)
    assert obj["Body"].read() == b"clip!" and obj["ContentType"] == headers["Content-Type"]
    # The URL is for PUT of this key only: another key with the same signature is refused.
    other = url.replace(f"/{key}?", f"/{key}-other?")
    with pytest.raises(urllib.error.HTTPError) as refused:
        put(other, b"x", headers)
    assert refused.value.code == 403


def test_url_policy_secret_keeps_the_url_out_of_status(
    kube: Any, namespace: str, operator_factory: Any, s3_server: Any, s3_bucket: str
) -> None:
    import base64

    from tests.kubelet_sim import run_pod, success_message, wait_for_pod

    operator_factory(
        s3_bucket=s3_bucket,
        s3_endpoint=s3_server.endpoint,
        url_policy="Secret",
        env={
            "AWS_ACCESS_KEY_ID": s3_server.access_key,
            "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        },
    )
    create(kube, namespace, manifest("hidden"))
    job = job_for(kube, namespace, "hidden")
    pod = wait_for_pod(kube, namespace, job.metadata.name)
    result = success_message(pod, size=6)
    s3_server.client().put_object(Bucket=s3_bucket, Key=result["key"], Body=b"secret")
    run_pod(kube, pod, 0, result)
    status = wait_phase(kube, namespace, "hidden", "Succeeded")["status"]
    assert "url" not in status and status["urlSecretName"] == "hidden-clip-url"
    secret = kube.core.read_namespaced_secret("hidden-clip-url", namespace)
    assert secret.metadata.owner_references[0].kind == "ClipJob"
    url = base64.b64decode(secret.data["url"]).decode()
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == b"secret"
    assert base64.b64decode(secret.data["expiresAt"]).decode() == status["urlExpiresAt"]


def test_tenant_endpoint_off_the_allow_list_fails_naming_the_list(
    kube: Any, namespace: str, operator_factory: Any, s3_server: Any, s3_bucket: str
) -> None:
    start_with_s3(operator_factory, s3_server, s3_bucket)
    body = manifest("evil", storage={"bucket": "bkt", "endpoint": "http://attacker.test:9000"})
    create(kube, namespace, body)
    status = wait_phase(kube, namespace, "evil", "Failed")["status"]
    assert status["reason"] == "InvalidSpec"
    assert "not an allowed S3 endpoint" in status["message"]
    assert s3_server.endpoint.split("//")[1] in status["message"]  # names what is allowed
    assert jobs_of(kube, namespace) == []


def test_allowed_endpoint_resolving_to_metadata_is_refused(
    kube: Any, namespace: str, operator_factory: Any, s3_server: Any, s3_bucket: str
) -> None:
    operator_factory(
        s3_bucket=s3_bucket,
        s3_endpoint=s3_server.endpoint,
        s3_allowed_endpoints="http://169.254.169.254:80",
    )
    body = manifest("meta", storage={"bucket": "bkt", "endpoint": "http://169.254.169.254"})
    create(kube, namespace, body)
    status = wait_phase(kube, namespace, "meta", "Failed")["status"]
    assert status["reason"] == "InvalidSpec" and "169.254.169.254" in status["message"]
    assert jobs_of(kube, namespace) == []


def test_tenant_keys_sign_the_upload_and_stay_out_of_the_pod(
    kube: Any, namespace: str, operator_factory: Any, s3_server: Any, s3_bucket: str
) -> None:
    from kubernetes import client

    start_with_s3(operator_factory, s3_server, s3_bucket)
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
    body = manifest("tenant", storage={"bucket": s3_bucket, "secretRef": {"name": "tenant-s3"}})
    create(kube, namespace, body)
    env = env_of(job_for(kube, namespace, "tenant"))
    query = parse_qs(urlsplit(env["CLIP_UPLOAD_URL"].value).query)
    assert query["X-Amz-Credential"][0].startswith(s3_server.access_key + "/")
    assert not [n for n in env if n.startswith("AWS_")]


def test_worker_network_policy_is_created_in_the_clipjob_namespace_before_the_job(
    kube: Any, namespace: str, operator_factory: Any
) -> None:
    operator_factory(worker_network_policy=json.dumps(POLICY))
    create(kube, namespace, manifest("fenced"))
    job = job_for(kube, namespace, "fenced")
    from kubernetes import client

    policy = client.NetworkingV1Api(kube.api).read_namespaced_network_policy(
        "clip-worker-egress", namespace
    )
    net = kube.api.sanitize_for_serialization(policy)
    assert net["spec"]["egress"] == POLICY["egress"]
    assert net["spec"]["podSelector"] == POLICY["podSelector"]
    assert net["metadata"]["creationTimestamp"] <= job.metadata.creation_timestamp.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    labels = job.spec.template.metadata.labels
    assert labels["app.kubernetes.io/name"] == "clip-worker"  # the policy selects the Pod
