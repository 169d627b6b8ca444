"""A process 'node': runs Job Pods as local processes, for a cluster without a kubelet.

`hack/demo` falls back to it when `hack/node up` cannot start a real node here (no Docker
for the images, missing kernel features; `CLIP_DEMO_NODE=process` forces it). It watches
Pods of ClipJob Jobs and runs each Pod's container command, the real `clip-worker`, as a
local process with the Pod's environment (plain values; Secret references, which the
presigned-upload contract no longer uses, are still resolved through the API),
then reports the Pod's status exactly as tests/kubelet_sim.py does: Running, then
terminated with the worker's exit code and termination message.

    python -m tests.local_node --kubeconfig .cluster/kubeconfig [--namespace NS]

It is not a sandbox: it runs the worker as the current user, on this machine.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.kubelet_sim import finish_pod, start_pod

SELECTOR = "app.kubernetes.io/managed-by=clip-operator"


def pod_env(core: Any, pod: Any) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in pod.spec.containers[0].env or []:
        if item.value is not None:
            env[item.name] = item.value
            continue
        ref = item.value_from.secret_key_ref if item.value_from else None
        if ref is None:
            continue
        try:
            secret = core.read_namespaced_secret(ref.name, pod.metadata.namespace)
        except Exception:
            if ref.optional:
                continue
            raise
        data = secret.data or {}
        if ref.key in data:
            env[item.name] = base64.b64decode(data[ref.key]).decode()
    return env


def run_worker(core: Any, pod: Any, timeout: float) -> tuple[int, str]:
    with tempfile.TemporaryDirectory(prefix="clip-node-") as scratch:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **pod_env(core, pod)}
        term = Path(scratch) / "termination-log"
        env.update(CLIP_WORK_DIR=scratch, HOME=scratch, CLIP_TERMINATION_LOG=str(term))
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "clip_worker"],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            code, tail = proc.returncode, proc.stderr[-2000:]
        except subprocess.TimeoutExpired:
            code, tail = 1, f"killed after {timeout}s"
        message = term.read_text() if term.exists() and term.stat().st_size else tail
        return code, message[:4096]


class _Api:
    def __init__(self, core: Any) -> None:
        self.core = core


def serve(kubeconfig: str, namespace: str | None, max_parallel: int, timeout: float) -> None:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    core = client.CoreV1Api(api)
    busy: set[str] = set()
    lock = threading.Semaphore(max_parallel)

    def execute(pod: Any) -> None:
        with lock:
            try:
                start_pod(_Api(core), pod)
                code, message = run_worker(core, pod, timeout)
                finish_pod(_Api(core), pod, code, message)
                print(
                    f"local-node: {pod.metadata.namespace}/{pod.metadata.name} exited {code}",
                    flush=True,
                )
            except Exception as exc:
                print(f"local-node: {pod.metadata.name}: {exc}", file=sys.stderr, flush=True)

    print(f"local-node: running ClipJob Pods ({namespace or 'all namespaces'})", flush=True)
    while True:
        try:
            if namespace:
                pods = core.list_namespaced_pod(namespace, label_selector=SELECTOR).items
            else:
                pods = core.list_pod_for_all_namespaces(label_selector=SELECTOR).items
        except Exception as exc:  # the API server restarts (fault tests): keep the node up
            print(f"local-node: listing Pods failed: {exc}", file=sys.stderr, flush=True)
            time.sleep(0.5)
            continue
        for pod in pods:
            key = pod.metadata.uid
            if (
                pod.status.phase == "Pending"
                and key not in busy
                and not pod.metadata.deletion_timestamp
            ):
                busy.add(key)
                threading.Thread(target=execute, args=(pod,), daemon=True).start()
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace")
    parser.add_argument("--max-parallel", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.kubeconfig, args.namespace, args.max_parallel, args.timeout)


if __name__ == "__main__":
    main()
