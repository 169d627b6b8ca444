"""A tenant whose Job creates are refused (quota, policy webhook) blocks nobody else.

In-flight limit 1, an older ClipJob in tenant A (refused) and a newer one in tenant B:
B's Job is created and B finishes; A says why it waits (phase Queued, reason
JobCreateRefused, the API server's message, a Warning Event); once the refusal is lifted,
A gets its Job and finishes too.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.faults.ledger import wait_until
from tests.faults.nodes import SimNode
from tests.faults.servers import DENY_MESSAGE, AdmissionWebhook
from tests.faults.steps import (
    PROBE_JOB,
    jobs_of,
    new_clipjob,
    status_of,
    upload_like_worker,
    warning_events,
)

pytestmark = pytest.mark.faults


def refused_message(kube: Any, namespace: str) -> str | None:
    """The API server's message for a (dry-run) Job create in `namespace`, None if allowed."""
    from kubernetes.client.exceptions import ApiException

    try:
        kube.batch.create_namespaced_job(namespace, PROBE_JOB, dry_run="All")
    except ApiException as exc:
        if exc.status == 403:
            return str(exc.body)
        raise
    return None


@contextmanager
def quota_refusal(kube: Any, namespace: str) -> Iterator[str]:
    from kubernetes import client

    kube.core.create_namespaced_resource_quota(
        namespace,
        client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="no-jobs"),
            spec=client.V1ResourceQuotaSpec(hard={"count/jobs.batch": "0"}),
        ),
    )
    try:
        # Quota admission enforces nothing until the resourcequota controller filled status.
        wait_until("quota enforced", lambda: refused_message(kube, namespace), timeout=30)
        yield "exceeded quota"
    finally:
        kube.core.delete_namespaced_resource_quota("no-jobs", namespace)


@contextmanager
def webhook_refusal(kube: Any, namespace: str) -> Iterator[str]:
    from kubernetes import client

    server = AdmissionWebhook().start()
    name = f"clip-faults-deny-{uuid.uuid4().hex[:6]}"
    admission = client.AdmissionregistrationV1Api(kube.api)
    admission.create_validating_webhook_configuration(server.configuration(name, namespace))
    try:
        wait_until("webhook in force", lambda: refused_message(kube, namespace), timeout=30)
        yield DENY_MESSAGE
    finally:
        admission.delete_validating_webhook_configuration(name)
        server.stop()


def _next_second(kube: Any, created: dict[str, Any]) -> bool:
    """True once a new object would get a later creationTimestamp (1 s resolution)."""
    stamp = datetime.datetime.fromisoformat(created["metadata"]["creationTimestamp"])
    return datetime.datetime.now(datetime.UTC) >= stamp + datetime.timedelta(seconds=1.05)


def refusal_scenario(
    title: str,
    refusal: Callable[[Any, str], Any],
    kube: Any,
    a: str,
    b: str,
    fault_operator: Any,
    scenario: Any,
    s3_server: Any,
) -> None:
    sc = scenario(title, [a, b])
    s3 = s3_server.client()
    node = SimNode(kube, [a, b], outcome=lambda pod: (0, upload_like_worker(pod, s3)))
    node.start()
    try:
        with refusal(kube, a) as expected_text:
            fault_operator([a, b], in_flight_limit=1)
            older = new_clipjob(kube, a, "older")
            wait_until("a later second", lambda: _next_second(kube, older), timeout=5, every=0.05)
            newer = new_clipjob(kube, b, "newer")
            sc.expect(older, "Succeeded")
            sc.expect(newer, "Succeeded")
            wait_until(
                "B's ClipJob Succeeded while A is refused",
                lambda: status_of(kube, b, "newer").get("phase") == "Succeeded",
                timeout=60,
            )
            status = wait_until(
                "A says its Job create is refused",
                lambda: (
                    (s := status_of(kube, a, "older")).get("reason") == "JobCreateRefused" and s
                ),
                timeout=30,
            )
            assert status["phase"] == "Queued", status
            assert expected_text in status.get("message", ""), status
            wait_until(
                "Warning Event JobCreateRefused",
                lambda: warning_events(kube, a, older["metadata"]["uid"], "JobCreateRefused"),
                timeout=30,
            )
            assert not jobs_of(kube, a, older["metadata"]["uid"])
        sc.fault_cleared()
        sc.finish(timeout=90)
    finally:
        node.stop()


def test_quota_refusal_blocks_only_its_tenant(
    kube: Any, namespace: str, tenant_b: str, fault_operator: Any, scenario: Any, s3_server: Any
) -> None:
    refusal_scenario(
        "Job create refused by ResourceQuota",
        quota_refusal,
        kube,
        namespace,
        tenant_b,
        fault_operator,
        scenario,
        s3_server,
    )


def test_webhook_refusal_blocks_only_its_tenant(
    kube: Any, namespace: str, tenant_b: str, fault_operator: Any, scenario: Any, s3_server: Any
) -> None:
    refusal_scenario(
        "Job create refused by admission webhook",
        webhook_refusal,
        kube,
        namespace,
        tenant_b,
        fault_operator,
        scenario,
        s3_server,
    )
