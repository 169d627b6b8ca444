"""Stopping, killing and restarting the local control plane's components (hack/cluster)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER = REPO_ROOT / "hack" / "cluster"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")


@dataclass
class ControlPlane:
    """The components `hack/cluster up` started, driven through `hack/cluster`."""

    kube: Any
    cluster_dir: Path

    def _run(self, *args: str, timeout: float = 180) -> None:
        proc = subprocess.run(
            [str(CLUSTER), *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise AssertionError(f"hack/cluster {' '.join(args)} failed:\n{proc.stderr[-3000:]}")

    def restart(self, component: str, kill: bool = False) -> float:
        """Stop (SIGKILL if `kill`) and start `component`; seconds until the API is back.

        After an API server or etcd restart the controller manager is restarted too: its
        client-go reflectors back off exponentially (up to 30 s, doubled by jitter, reset
        only after 2 quiet minutes), so after the second restart in a row its Job
        controller saw new Jobs only 45-110 s later here. That is the control plane's
        recovery, not the operator's; the operator under test still goes through the
        whole outage.
        """
        assert component in COMPONENTS, component
        t0 = time.monotonic()
        self._run("restart", component, *(["--kill"] if kill else []))
        took = time.monotonic() - t0
        if component != "kube-controller-manager":
            self._run("restart", "kube-controller-manager")
        self.wait_healthy()
        return took

    def stop(self, component: str, kill: bool = False) -> None:
        self._run("stop", component, *(["--kill"] if kill else []))

    def start(self, component: str) -> None:
        self._run("start", component)
        self.wait_healthy()

    def pid(self, component: str) -> int | None:
        path = self.cluster_dir / f"{component}.pid"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def cmdline(self, component: str) -> str:
        pid = self.pid(component)
        if pid is None:
            return ""
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return ""

    def wait_healthy(self, timeout: float = 120) -> None:
        """Every component runs and the API answers reads and writes."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            down = [c for c in COMPONENTS if not self.cmdline(c)]
            if down:
                last = f"not running: {down}"
            else:
                ready = self.kube.run_kubectl("get", "--raw", "/readyz", timeout=10)
                try:
                    if ready.returncode != 0:
                        raise RuntimeError(ready.stderr.strip()[-200:])
                    self.kube.core.list_namespace(limit=1, _request_timeout=5)
                    return
                except Exception as exc:
                    last = f"{type(exc).__name__}: {str(exc)[:200]}"
            time.sleep(0.3)
        raise AssertionError(f"control plane not healthy after {timeout}s: {last}")
