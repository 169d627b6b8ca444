"""`make demo` left running, then `make test`: the tests never use or disturb the demo's cluster.

The README's two commands must pass in either order. The demo's control plane lives in
.cluster/ with its API server on 16443; the tests' in .cluster-test/ on 17443
(hack/test-env.sh). Before that split, a running demo was reused by the tests, and its
operator and node took part in the tests' ClipJobs.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
DEMO_DIR = REPO / ".cluster"
CLUSTER = REPO / "hack" / "cluster"


def _demo_env() -> dict[str, str]:
    """The environment `make demo` runs hack/cluster with: no test settings."""
    env = {k: v for k, v in os.environ.items() if k not in (
        "CLUSTER_DIR", "ETCD_PORT", "ETCD_PEER_PORT", "APISERVER_PORT", "KCM_PORT"
    )}  # fmt: skip
    env["CLUSTER_DIR"] = str(DEMO_DIR)
    return env


@pytest.fixture
def demo_cluster() -> Iterator[Path]:
    """The demo's control plane, as `make demo` leaves it (started here if not running)."""
    status = subprocess.run(
        [str(CLUSTER), "status"], env=_demo_env(), capture_output=True, text=True
    ).stdout
    started = "apiserver: ready" not in status
    if started:
        up = subprocess.run(
            [str(CLUSTER), "up"], env=_demo_env(), capture_output=True, text=True, timeout=600
        )
        assert up.returncode == 0, up.stderr[-2000:]
    try:
        yield DEMO_DIR / "kubeconfig"
    finally:
        if started:  # only what this test started; a user's demo stays up
            subprocess.run(
                [str(CLUSTER), "down"], env=_demo_env(), capture_output=True, timeout=120
            )


def _server(kubeconfig: str | Path) -> str:
    for line in Path(kubeconfig).read_text().splitlines():
        if "server:" in line:
            return line.split("server:", 1)[1].strip()
    raise AssertionError(f"no server in {kubeconfig}")


def test_a_running_demo_is_neither_reused_nor_touched(kube: Any, demo_cluster: Path) -> None:
    from kubernetes import client, config

    assert Path(kube.kubeconfig).resolve() != demo_cluster.resolve()
    assert _server(kube.kubeconfig) != _server(demo_cluster)
    # A namespace made by the tests exists in the tests' cluster only.
    name = f"clip-isolation-{uuid.uuid4().hex[:6]}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        demo = client.CoreV1Api(config.new_client_from_config(config_file=str(demo_cluster)))
        names = {ns.metadata.name for ns in demo.list_namespace().items}
        assert name not in names
        # hack/cluster with the tests' environment reports the tests' cluster, not the demo's.
        status = subprocess.run([str(CLUSTER), "env"], capture_output=True, text=True).stdout
        assert f"{DEMO_DIR}/kubeconfig" not in status
        assert f"{os.environ['CLUSTER_DIR']}/kubeconfig" in status
    finally:
        kube.core.delete_namespace(name)
