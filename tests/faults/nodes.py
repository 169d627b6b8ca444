"""Where the fault tier's Pods run.

- `SimNode`: tests/kubelet_sim's status writes for several namespaces, tolerant of API
  outages (it keeps trying while the API server restarts), with Pods it can hold Running
  until released. For scenarios where only Pod statuses matter.
- `ProcessNode`: tests/local_node.py as a subprocess: the real worker (`clip_worker`)
  runs for each Pod and uploads through the presigned URLs the operator put in the Pod.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.kubelet_sim import finish_pod, start_pod, success_message

REPO_ROOT = Path(__file__).resolve().parents[2]
# Holds a deleted Pod while the "container" finishes in its grace period, as a kubelet does
# (without a node, the API server would remove an unscheduled Pod at once).
GRACE_FINALIZER = "faults.mememaker.io/termination-grace"


class SimNode(threading.Thread):
    """Starts each Pending Pod, and after `run_seconds` ends it with `outcome(pod)`."""

    def __init__(
        self,
        kube: Any,
        namespaces: list[str],
        run_seconds: float = 0.5,
        outcome: Callable[[Any], tuple[int, Any]] | None = None,
        max_seconds: float = 300,
        on_kill: Callable[[Any], None] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.kube, self.namespaces = kube, namespaces
        self.run_seconds, self.max_seconds = run_seconds, max_seconds
        self.outcome = outcome or (lambda pod: (0, success_message(pod)))
        self.on_kill = on_kill  # what a running container still does in its grace period
        self.hold: set[str] = set()  # ClipJob names whose Pods stay Running until released
        self.stopping = threading.Event()
        self.running: dict[str, float] = {}
        self.finished: set[str] = set()
        self.started_pods: list[str] = []
        self.killed: list[str] = []
        self.errors = 0

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self.stopping.is_set() and time.monotonic() < deadline:
            for ns in self.namespaces:
                try:
                    self._step(ns)
                except Exception:  # API restarting: the next pass retries
                    self.errors += 1
            self.stopping.wait(0.2)

    def _step(self, namespace: str) -> None:
        now = time.monotonic()
        for pod in self.kube.core.list_namespaced_pod(namespace, _request_timeout=5).items:
            key = f"{namespace}/{pod.metadata.name}"
            if key in self.finished:
                continue
            if pod.metadata.deletion_timestamp:
                if key in self.running:  # a kubelet kills the container and says so
                    if self.on_kill is not None:
                        self.on_kill(pod)
                    self.killed.append(key)
                    finish_pod(self.kube, pod, 137, {"reason": "Killed", "message": "deleted"})
                    self.finished.add(key)
                    del self.running[key]
                    self._release(pod)
                continue
            clip = (pod.metadata.labels or {}).get("mememaker.io/clipjob", "")
            if pod.status.phase == "Pending" and key not in self.running:
                if self.on_kill is not None:
                    self.kube.core.patch_namespaced_pod(
                        pod.metadata.name,
                        namespace,
                        [{"op": "add", "path": "/metadata/finalizers/-", "value": GRACE_FINALIZER}],
                    )
                start_pod(self.kube, pod)
                self.running[key] = now
                self.started_pods.append(key)
            elif (
                key in self.running
                and clip not in self.hold
                and now - self.running[key] >= self.run_seconds
            ):
                code, message = self.outcome(pod)
                finish_pod(self.kube, pod, code, message)
                self.finished.add(key)
                del self.running[key]

    def _release(self, pod: Any) -> None:
        """Drop GRACE_FINALIZER (a JSON patch that tests its position, retried)."""
        for _ in range(10):
            fresh = self.kube.core.read_namespaced_pod(pod.metadata.name, pod.metadata.namespace)
            finalizers = fresh.metadata.finalizers or []
            if GRACE_FINALIZER not in finalizers:
                return
            at = finalizers.index(GRACE_FINALIZER)
            path = f"/metadata/finalizers/{at}"
            try:
                self.kube.core.patch_namespaced_pod(
                    pod.metadata.name,
                    pod.metadata.namespace,
                    [
                        {"op": "test", "path": path, "value": GRACE_FINALIZER},
                        {"op": "remove", "path": path},
                    ],
                )
                return
            except Exception:  # the Job controller changed the list meanwhile: read again
                continue

    def release(self, clipjob_name: str) -> None:
        self.hold.discard(clipjob_name)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=15)


class ProcessNode:
    """`python -m tests.local_node` for one namespace; its log next to the test's files."""

    def __init__(self, kubeconfig: str, namespace: str, log_path: Path) -> None:
        self.kubeconfig, self.namespace, self.log_path = kubeconfig, namespace, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ProcessNode:
        handle = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.local_node",
                "--kubeconfig",
                self.kubeconfig,
                "--namespace",
                self.namespace,
                "--timeout",
                "120",
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            start_new_session=True,  # its worker processes share the group: stop() ends all
        )
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
