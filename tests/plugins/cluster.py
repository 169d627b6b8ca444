"""Pytest plugin: a real Kubernetes control plane, a namespace per test, the real operator.

- `kube` (session): the control plane. Uses CLIP_TEST_KUBECONFIG if set (any cluster),
  else reuses a running `hack/cluster up`, else starts one (and stops it at the end
  unless CLIP_KEEP_CLUSTER=1). Skips with instructions if the binaries cannot be built.
- `namespace` (function): a fresh namespace labelled Pod Security `restricted`.
- `operator_factory` (function): starts `clip-operator run` as a real subprocess watching
  that namespace (or `namespaces=[...]`), with settings given as keyword arguments;
  kill/restart/pause/resume it at will.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER = REPO_ROOT / "hack" / "cluster"


@dataclass
class Kube:
    kubeconfig: str
    kubectl: str
    api: Any = None

    def __post_init__(self) -> None:
        from kubernetes import client, config

        self.api = config.new_client_from_config(config_file=self.kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.events = client.EventsV1Api(self.api)

    def run_kubectl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.kubectl, "--kubeconfig", self.kubeconfig, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _env_line(output: str, name: str) -> str:
    for line in output.splitlines():
        if line.startswith(f"export {name}="):
            return line.split("=", 1)[1]
    raise RuntimeError(f"hack/cluster env printed no {name}")


@pytest.fixture(scope="session")
def kube() -> Iterator[Kube]:
    env_out = subprocess.run(
        [str(CLUSTER), "env"], capture_output=True, text=True, check=True
    ).stdout
    kubectl = _env_line(env_out, "PATH").split(":")[0] + "/kubectl"
    given = os.environ.get("CLIP_TEST_KUBECONFIG")
    if given:
        yield Kube(
            given, kubectl if Path(kubectl).exists() else shutil.which("kubectl") or "kubectl"
        )
        return
    status = subprocess.run([str(CLUSTER), "status"], capture_output=True, text=True).stdout
    started = False
    if "apiserver: ready" not in status:
        if not shutil.which("go"):
            pytest.skip(
                "no Go toolchain to build Kubernetes: install Go, then run `hack/cluster up`"
            )
        proc = subprocess.run([str(CLUSTER), "up"], capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            pytest.fail(f"hack/cluster up failed:\n{proc.stderr[-4000:]}")
        started = True
    yield Kube(_env_line(env_out, "KUBECONFIG"), kubectl)
    if started and not os.environ.get("CLIP_KEEP_CLUSTER"):
        subprocess.run([str(CLUSTER), "down"], capture_output=True, text=True, timeout=120)


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
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
    # Pods cannot be created before the ServiceAccount controller made `default`.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sas = kube.core.list_namespaced_service_account(name).items
        if any(sa.metadata.name == "default" for sa in sas):
            break
        time.sleep(0.2)
    yield name
    kube.core.delete_namespace(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OperatorProcess:
    """`clip-operator run` as a subprocess, the way it runs in its Pod."""

    env: dict[str, str]
    namespace: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    health_port: int = 0
    starts: int = 0
    logs: list[Path] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def start(self, wait: bool = True) -> OperatorProcess:
        self.starts += 1
        path = self.log_path.with_suffix(f".{self.starts}.log")
        self.logs.append(path)
        handle = path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clip_operator",
                "run",
                *(arg for ns in self.namespaces or [self.namespace] for arg in ("--namespace", ns)),
            ],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"operator exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"operator not healthy after {timeout}s:\n{self.log_tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the process keeps its connections and state but runs nothing."""
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def log_tail(self, lines: int = 60) -> str:
        text = "".join(p.read_text(errors="replace") for p in self.logs if p.exists())
        return "\n".join(text.splitlines()[-lines:])

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())


@pytest.fixture
def operator_factory(
    kube: Kube, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start(
        wait: bool = True,
        env: dict[str, str] | None = None,
        namespaces: list[str] | None = None,
        **settings: Any,
    ) -> OperatorProcess:
        metrics_port, health_port = free_port(), free_port()
        full = {k: v for k, v in os.environ.items() if not k.startswith("CLIP_OPERATOR_")}
        full.update(
            KUBECONFIG=kube.kubeconfig,
            CLIP_OPERATOR_METRICS_PORT=str(metrics_port),
            CLIP_OPERATOR_HEALTH_PORT=str(health_port),
            CLIP_OPERATOR_LOOP_INTERVAL_SECONDS="1",
            CLIP_OPERATOR_S3_BUCKET="clips",
            # Presigning is offline; these keys only sign URLs unless a test sets real ones.
            AWS_ACCESS_KEY_ID="test-access-key",
            AWS_SECRET_ACCESS_KEY="test-secret-key",
        )
        full.update(env or {})
        for key, value in settings.items():
            full[f"CLIP_OPERATOR_{key.upper()}"] = str(value)
        op = OperatorProcess(
            full,
            namespace,
            tmp_path / "operator",
            metrics_port=metrics_port,
            health_port=health_port,
            namespaces=list(namespaces or []),
        )
        started.append(op)
        return op.start(wait=wait)

    yield start
    failed = getattr(request.node, "rep_call", None)
    for op in started:
        if op.proc is not None and op.proc.poll() is None:
            op.proc.send_signal(signal.SIGCONT)  # a paused operator cannot handle SIGTERM
        op.kill(signal.SIGTERM)
        if failed is not None and failed.failed:
            print(f"--- operator log ({namespace}) ---\n{op.log_tail(120)}")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)
