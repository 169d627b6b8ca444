"""End-to-end fixtures: a cluster with a Ready node, and S3 + media servers its Pods reach.

These tests need only a kubeconfig whose cluster has a Ready node that can run the job
image `clip-job:dev` without pulling it:

- this machine: `hack/cluster up && hack/node up` (hack/node loads the image from the local
  Docker into the node's containerd); tests find it through `hack/cluster env`;
- any other cluster: `CLIP_TEST_KUBECONFIG=/path/kubeconfig` and, since the Pods must reach
  the S3 and media servers these tests start on this machine, `CLIP_E2E_HOST_ADDRESS=<an
  address of this machine that the Pods reach>` (on kind: the Docker network's gateway, e.g.
  `docker network inspect kind -f '{{(index .IPAM.Config 0).Gateway}}'`; load the image
  first with `kind load docker-image clip-job:dev`).

Without a Ready node every test here is skipped with a reason that says `hack/node up`.

`--cluster-backend=kind` (default `local`) runs the same tests on a kind cluster instead,
created through pytest-kind with the S3 and media servers inside it (tests/e2e/kind_backend.py,
docs/kind.md; `make e2e-kind` does it all offline).

The servers bind only that host address (for hack/node: the bridge address, e.g.
10.217.0.1, an address of this machine on a bridge hack/node made), never 0.0.0.0.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e import kind_backend
from tests.mediaserver import MediaHTTPServer
from tests.plugins.cluster import CLUSTER, Kube
from tests.plugins.s3 import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_REGION,
    DEFAULT_SECRET_KEY,
    HEALTH_PATH,
    S3Server,
    _answers,
    _stop,
    _versitygw_binary,
)

LOCAL_NODE_LABEL = "clip.mememaker.io/local-node"
JOB_IMAGE = os.environ.get("CLIP_E2E_JOB_IMAGE", "clip-job:dev")
NEEDS_NODE = (
    "needs a cluster with a Ready node: run `hack/cluster up && hack/node up` "
    "(or set CLIP_TEST_KUBECONFIG and CLIP_E2E_HOST_ADDRESS for another cluster)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster-backend",
        choices=("local", "kind"),
        default="local",
        help="e2e cluster: local (hack/cluster + hack/node, or CLIP_TEST_KUBECONFIG) or kind "
        "(pytest-kind: --kind-bin, --kind-kubectl-bin, --kind-image, --cluster-name, "
        "--keep-cluster; docs/kind.md)",
    )


@dataclass
class ClusterMediaServer:
    """The media server running in the kind cluster (what tests use of MediaHTTPServer)."""

    url: str
    server_address: tuple[str, int]


@pytest.fixture(scope="session", autouse=True)
def kind_env(request: pytest.FixtureRequest) -> Iterator[kind_backend.KindEnv | None]:
    """With --cluster-backend=kind: the kind cluster, its kubeconfig as CLIP_TEST_KUBECONFIG."""
    if request.config.getoption("cluster_backend", default="local") != "kind":
        yield None
        return
    try:
        import pytest_kind  # noqa: F401
    except ImportError:
        pytest.skip("--cluster-backend=kind needs pytest-kind: pip install -e '.[kind]'")
    media = request.getfixturevalue("media")
    option = request.config.getoption
    env = kind_backend.start(
        {
            "kind": option("kind_bin", default=None),
            "kubectl": option("kind_kubectl_bin", default=None),
            "image": option("kind_image", default=None),
            # pytest-kind's --cluster-name, unless left at its default (then hack/kind's name)
            "name": None
            if option("cluster_name", default=None) in (None, "pytest-kind")
            else option("cluster_name"),
        },
        kind_backend.REPO_ROOT / ".cluster" / "kind",
        [JOB_IMAGE, os.environ.get("CLIP_E2E_OPERATOR_IMAGE", "clip-operator:dev")],
        media.root,
        _versitygw_binary(),
        (DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, DEFAULT_REGION),
    )
    os.environ["CLIP_TEST_KUBECONFIG"] = str(env.kubeconfig)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + env.describe(), flush=True)  # the kind node, kubeadm's control plane, ...
    try:
        with kind_backend.svc_hosts({kind_backend.INFRA_HOST: env.node_ip}):
            yield env
    finally:
        os.environ.pop("CLIP_TEST_KUBECONFIG", None)
        if not option("keep_cluster", default=False):
            env.cluster.delete()


def _control_plane_running() -> bool:
    if os.environ.get("CLIP_TEST_KUBECONFIG"):
        return True
    try:
        out = subprocess.run(
            [str(CLUSTER), "status"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "apiserver: ready" in out


def _ready_nodes(kube: Kube) -> list[Any]:
    ready = []
    for node in kube.core.list_node().items:
        conditions = {c.type: c.status for c in node.status.conditions or []}
        blocking = [t for t in node.spec.taints or [] if t.effect in ("NoSchedule", "NoExecute")]
        if conditions.get("Ready") == "True" and not node.spec.unschedulable and not blocking:
            ready.append(node)
    return ready


@pytest.fixture(scope="session")
def node_kube(request: pytest.FixtureRequest) -> Kube:
    """The `kube` cluster, only if it has a schedulable Ready node (else skip)."""
    if not _control_plane_running():
        pytest.skip(f"no control plane running; {NEEDS_NODE}")
    kube: Kube = request.getfixturevalue("kube")
    deadline = time.monotonic() + 10
    while not _ready_nodes(kube):
        if time.monotonic() > deadline:
            pytest.skip(f"the cluster has no schedulable Ready node; {NEEDS_NODE}")
        time.sleep(0.5)
    return kube


def _image_names(image: str) -> set[str]:
    """The names a node may list for a local image (CRI normalises Docker Hub short names)."""
    names = {image}
    if "/" not in image:
        names.add(f"docker.io/library/{image}")
    return names


def require_image_on_node(kube: Kube, image: str) -> None:
    """Skip unless a Ready node lists `image` (Pods use imagePullPolicy Never)."""
    wanted = _image_names(image)
    for node in _ready_nodes(kube):
        for img in node.status.images or []:
            if wanted & set(img.names or []):
                return
    pytest.skip(
        f"no Ready node has the image {image}: build it (hack/images.sh), then "
        f"`hack/node load {image}` (kind: `kind load docker-image {image}`)"
    )


@pytest.fixture(scope="session")
def host_address(node_kube: Kube, kind_env: kind_backend.KindEnv | None) -> str:
    """An address of this machine that Pods on the node reach (servers bind only it).

    On kind: the in-cluster servers' Service address (the worker resolves their DNS name
    to it, and the tests allow the worker that one private address).
    """
    if kind_env is not None:
        return kind_env.service_ip
    given = os.environ.get("CLIP_E2E_HOST_ADDRESS")
    if given:
        return given
    for node in _ready_nodes(node_kube):
        if (node.metadata.labels or {}).get(LOCAL_NODE_LABEL) == "true":
            for addr in node.status.addresses or []:
                if addr.type == "InternalIP":
                    # hack/node's node IP is the host's own address on the Pod bridge.
                    return str(addr.address)
    pytest.skip(
        "the node is not hack/node's: set CLIP_E2E_HOST_ADDRESS to an address of this "
        "machine that its Pods reach"
    )


@pytest.fixture(scope="session")
def s3_server(
    host_address: str,
    tmp_path_factory: pytest.TempPathFactory,
    kind_env: kind_backend.KindEnv | None,
) -> Iterator[S3Server]:
    """versitygw bound on the host address (overrides the loopback one of tests.plugins.s3).

    On kind: the versitygw in the cluster, by its Service DNS name.
    """
    import socket

    if kind_env is not None:
        kind_backend.wait_answers(kind_env.s3_endpoint + HEALTH_PATH)
        yield S3Server(kind_env.s3_endpoint, DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, DEFAULT_REGION)
        return

    binary = _versitygw_binary()
    root = tmp_path_factory.mktemp("e2e-versitygw")
    (root / "data").mkdir()
    (root / "sidecar").mkdir()
    env = {
        **os.environ,
        "ROOT_ACCESS_KEY": DEFAULT_ACCESS_KEY,
        "ROOT_SECRET_KEY": DEFAULT_SECRET_KEY,
    }
    for _ in range(3):
        with socket.socket() as sock:
            sock.bind((host_address, 0))
            port = sock.getsockname()[1]
        endpoint = f"http://{host_address}:{port}"
        log = (root / "versitygw.log").open("ab")
        proc = subprocess.Popen(
            [str(binary), "--port", f"{host_address}:{port}", "--region", DEFAULT_REGION,
             "--health", HEALTH_PATH, "posix", "--sidecar", str(root / "sidecar"),
             str(root / "data")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers(endpoint):
                try:
                    yield S3Server(endpoint, DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, DEFAULT_REGION)
                finally:
                    _stop(proc)
                return
            time.sleep(0.1)
        _stop(proc)
    raise RuntimeError(f"versitygw did not start on {host_address}; see {root}/versitygw.log")


@pytest.fixture(scope="session")
def media_server(
    media: Any, host_address: str, kind_env: kind_backend.KindEnv | None
) -> Iterator[MediaHTTPServer | ClusterMediaServer]:
    """The test media over HTTP on the host address (overrides the loopback one).

    On kind: tests/mediaserver.py in the cluster, by its Service DNS name.
    """
    if kind_env is not None:
        kind_backend.wait_answers(kind_env.media_url + "/_status/204")
        yield ClusterMediaServer(
            kind_env.media_url, (kind_backend.INFRA_HOST, kind_backend.MEDIA_PORT)
        )
        return
    server = MediaHTTPServer(media.root, host_address, 0)
    server.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def e2e_operator(
    node_kube: Kube,
    namespace: str,
    operator_factory: Any,
    s3_server: S3Server,
    s3_bucket: str,
    host_address: str,
    media_server: MediaHTTPServer,
    kind_env: kind_backend.KindEnv | None,
) -> Any:
    """The real operator for this namespace, running the real job image on the node.

    On kind it still runs as a process here; it reaches the in-cluster S3 by its Service
    name through the node (kind_backend.KindEnv.subprocess_env).
    """
    require_image_on_node(node_kube, JOB_IMAGE)
    extra_env = kind_env.subprocess_env() if kind_env is not None else {}
    # No keys in the namespace: the operator presigns the worker's upload.
    return operator_factory(
        job_image=JOB_IMAGE,
        job_image_pull_policy="Never",
        s3_endpoint=s3_server.endpoint,
        s3_bucket=s3_bucket,
        s3_region=s3_server.region,
        # Private networks are allowed for the test only: the host address it serves from.
        allow_private_networks=f"{host_address}/32",
        allow_ports=str(media_server.server_address[1]),  # the media server's port
        network_timeout_seconds=20,
        ttl_seconds_after_finished=600,
        env={
            "AWS_ACCESS_KEY_ID": s3_server.access_key,
            "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
            **extra_env,
        },
    )
