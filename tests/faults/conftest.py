"""Fixtures of the fault tier: the control plane it restarts, tenants, the operator, the report.

Every scenario records one row (ClipJobs lost, duplicate Jobs, time to recover); the rows
are printed at the end of the session and written to `<cluster dir>/faults-report.md`.
"""

from __future__ import annotations

import datetime
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.control import ControlPlane
from tests.faults.ledger import JobLedger, Scenario, format_table
from tests.faults.servers import StoppableS3

# What the new operator core reads (issue 11); settings this operator does not know yet
# are left out and named in the report, so a run on an older operator still says what it can.
FAULT_SETTINGS: dict[str, Any] = {
    "resync_seconds": 3,
    "workers": 4,
    "allow_private_networks": "127.0.0.0/8",
}

_ROWS = pytest.StashKey[list[dict[str, Any]]]()
_DROPPED = pytest.StashKey[set[str]]()
_CLUSTER_DIR = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_ROWS] = []
    config.stash[_DROPPED] = set()


def known_settings() -> set[str] | None:
    try:
        from clip_operator.config import OperatorConfig
    except ImportError:
        return None
    return set(OperatorConfig.model_fields)


@pytest.fixture(scope="session")
def control_plane(kube: Any, pytestconfig: pytest.Config) -> ControlPlane:
    if os.environ.get("CLIP_TEST_KUBECONFIG"):
        pytest.skip(
            "the fault tier restarts etcd and kube-apiserver: run it against `hack/cluster up` "
            "(unset CLIP_TEST_KUBECONFIG)"
        )
    cp = ControlPlane(kube, Path(kube.kubeconfig).parent)
    pytestconfig.stash[_CLUSTER_DIR] = cp.cluster_dir
    if "resourcequota-controller" not in cp.cmdline("kube-controller-manager"):
        # A cluster started before hack/cluster ran the quota controller: quota would admit all.
        cp.restart("kube-controller-manager")
    cp.wait_healthy()
    return cp


def _new_namespace(kube: Any) -> str:
    from kubernetes import client

    name = f"clip-fault-{uuid.uuid4().hex[:8]}"
    labels = {"pod-security.kubernetes.io/enforce": "restricted", "clip-operator.test": "true"}
    kube.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        accounts = kube.core.list_namespaced_service_account(name).items
        if any(sa.metadata.name == "default" for sa in accounts):
            break
        time.sleep(0.2)
    return name


@pytest.fixture
def tenant_b(kube: Any, control_plane: ControlPlane) -> Iterator[str]:
    """A second tenant namespace (the first is the `namespace` fixture)."""
    name = _new_namespace(kube)
    yield name
    try:
        kube.core.delete_namespace(name)
    except Exception as exc:  # cleanup must not hide the test's result
        print(f"deleting namespace {name} failed: {exc}")


@pytest.fixture
def fault_operator(
    operator_factory: Callable[..., Any],
    s3_server: Any,
    s3_bucket: str,
    pytestconfig: pytest.Config,
) -> Callable[..., Any]:
    """Start the operator on some namespaces with the fault tier's settings and a real S3."""

    def start(
        namespaces: list[str], server: Any = None, bucket: str | None = None, **extra: Any
    ) -> Any:
        store = server or s3_server
        settings = {
            **FAULT_SETTINGS,
            "s3_endpoint": store.endpoint,
            "s3_bucket": bucket or s3_bucket,
            **extra,
        }
        known = known_settings()
        dropped = sorted(k for k in settings if known is not None and k not in known)
        op = operator_factory(
            namespaces=namespaces,
            env={"AWS_ACCESS_KEY_ID": store.access_key, "AWS_SECRET_ACCESS_KEY": store.secret_key},
            **{k: v for k, v in settings.items() if k not in dropped},
        )
        pytestconfig.stash[_DROPPED].update(dropped)
        return op

    return start


@pytest.fixture(scope="session")
def source_server(media: Any) -> Iterator[Any]:
    """The test media on port 80 of a loopback address of its own (127.0.0.N).

    Workers reach sources on ports 80 and 443 only (more only with CLIP_ALLOW_PORTS,
    which the operator does not set), so the real worker here fetches from port 80 like
    from any web site; a random 127.0.0.N avoids another test's server on 127.0.0.1:80.
    """
    import errno
    import random

    from tests.mediaserver import MediaHTTPServer

    rng = random.Random()
    for _ in range(20):
        host = f"127.0.{rng.randint(0, 255)}.{rng.randint(2, 254)}"
        try:
            server = MediaHTTPServer(media.root, host, 80, send_buffer=None)
        except PermissionError:
            pytest.skip("serving test media on port 80 needs root or CAP_NET_BIND_SERVICE")
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                continue
            raise
        server.start()
        try:
            yield server
        finally:
            server.shutdown()
            server.server_close()
        return
    pytest.fail("no free 127.x.y.z:80 for the media server after 20 tries")


@pytest.fixture
def stoppable_s3(tmp_path: Path) -> Iterator[StoppableS3]:
    """A versitygw of the test's own (bucket `clips`), to stop and start at will."""
    s3 = StoppableS3(tmp_path / "s3")
    s3.start()
    s3.server.client().create_bucket(Bucket="clips")
    try:
        yield s3
    finally:
        s3.stop()


@pytest.fixture
def scenario(
    kube: Any, control_plane: ControlPlane, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Scenario]]:
    """`scenario(name, namespaces)`: a Scenario whose Job ledger runs until the test ends."""
    made: list[Scenario] = []

    def make(name: str, namespaces: list[str]) -> Scenario:
        sc = Scenario(name, kube, JobLedger(kube.kubeconfig, namespaces).start())
        made.append(sc)
        return sc

    yield make
    rep = getattr(request.node, "rep_call", None)
    outcome = "passed" if rep is not None and rep.passed else "FAILED"
    for sc in made:
        sc.ledger.stop()
        if sc.lost is None:
            sc.notes.append("did not reach its final check")
        request.config.stash[_ROWS].append(sc.row(outcome))
    # The next test gets a whole control plane, whatever this one did to it.
    control_plane.wait_healthy()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(_ROWS, [])
    if not rows:
        return
    table = format_table(rows)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    dropped = sorted(config.stash.get(_DROPPED, set()))
    if dropped:
        table += "\n\nsettings this operator does not know (left out): " + ", ".join(dropped)
    terminalreporter.section("fault scenarios")
    terminalreporter.write_line(table)
    directory = config.stash.get(_CLUSTER_DIR, None)
    if directory is not None and directory.is_dir():
        path = directory / "faults-report.md"
        path.write_text(f"# Fault scenarios, {stamp}\n\n{table}\n")
        terminalreporter.write_line(f"written to {path}")
