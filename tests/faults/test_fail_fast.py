"""Bad input fails at once and says why, instead of waiting out a deadline."""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults.steps import jobs_of, new_clipjob, status_of

pytestmark = pytest.mark.faults


def test_missing_storage_secret_fails_within_10s_without_a_job(
    kube: Any, namespace: str, fault_operator: Any, scenario: Any
) -> None:
    sc = scenario("missing storage Secret", [namespace])
    fault_operator([namespace])
    sc.fault_cleared()  # the clock starts when the ClipJob is created
    cj = new_clipjob(kube, namespace, "nosecret", storage={"secretRef": {"name": "tenant-s3-typo"}})
    sc.expect(cj, "Failed", reason="SecretNotFound", jobs_allowed=0)
    sc.finish(timeout=10)
    assert "tenant-s3-typo" in status_of(kube, namespace, "nosecret").get("message", "")
    assert not jobs_of(kube, namespace, cj["metadata"]["uid"])
