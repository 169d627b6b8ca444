"""Worker exit -> ClipJob Ready with its URL, on the local control plane (issue 18).

    python -m bench.operator.exit_to_ready --src /tmp/before --src /tmp/after --runs 20

Each `--src` is a tree with `operator/` (e.g. `git archive <rev> operator | tar -x -C DIR`).
For each, `clip-operator run` from that tree serves a fresh namespace of the cluster named by
KUBECONFIG (`hack/cluster up`; the real kube-controller-manager's Job controller, no node):
ClipJobs are created one at a time, and this script plays the kubelet
(tests/kubelet_sim.py): the worker container starts, runs 0.5 s and exits 0 with a result.
Measured: from the container's exit (its status written) to the ClipJob's `Ready=True`
with a URL, polled every 20 ms. Rounds alternate between the trees.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.operator.run import wait_healthy
from tests.clipjobs import create, get, manifest
from tests.kubelet_sim import finish_pod, start_pod, success_message, wait_for_pod


class Cluster:
    def __init__(self) -> None:
        from kubernetes import client, config

        self.api = config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)


def namespace(kube: Cluster) -> str:
    from kubernetes import client

    name = f"bench-exit-{uuid.uuid4().hex[:6]}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    for _ in range(150):
        if any(
            sa.metadata.name == "default"
            for sa in kube.core.list_namespaced_service_account(name).items
        ):
            break
        time.sleep(0.2)
    return name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_operator(src: Path, ns: str, health: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIP_OPERATOR_")}
    env.update(
        PYTHONPATH=str(src / "operator"),
        CLIP_OPERATOR_HEALTH_PORT=str(health),
        CLIP_OPERATOR_METRICS_PORT="0",
        CLIP_OPERATOR_S3_BUCKET="clips",
        CLIP_OPERATOR_DEDUPE="Off",
        AWS_ACCESS_KEY_ID="bench-key",
        AWS_SECRET_ACCESS_KEY="bench-secret",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "clip_operator", "run", "--namespace", ns],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return wait_healthy(proc, health, f"from {src}: {log}")


def ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
    return conds.get("Ready") == "True" and bool(status.get("url"))


def one_run(kube: Cluster, ns: str, name: str) -> float:
    create(kube, ns, manifest(name))
    job_name = None
    for _ in range(1500):
        jobs = kube.batch.list_namespaced_job(ns, label_selector=f"mememaker.io/clipjob={name}")
        if jobs.items:
            job_name = jobs.items[0].metadata.name
            break
        time.sleep(0.02)
    assert job_name, f"no Job for {name}"
    pod = wait_for_pod(kube, ns, job_name)
    start_pod(kube, pod)
    time.sleep(0.5)
    finish_pod(kube, pod, 0, success_message(pod))
    exited = time.monotonic()
    while time.monotonic() - exited < 60:
        if ready(get(kube, ns, name)):
            return time.monotonic() - exited
        time.sleep(0.02)
    raise SystemExit(f"{name} not Ready 60 s after its worker exited")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", action="append", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    kube = Cluster()
    logs = Path(tempfile.mkdtemp(prefix="exit-to-ready-"))
    setups = []
    for i, src in enumerate(args.src):
        ns = namespace(kube)
        setups.append((src, ns, start_operator(src, ns, free_port(), logs / f"op{i}.log")))
    times: dict[Path, list[float]] = {src: [] for src in args.src}
    try:
        for run in range(args.runs):
            for src, ns, _ in setups:
                times[src].append(one_run(kube, ns, f"r{run:02d}"))
    finally:
        for _, ns, proc in setups:
            proc.terminate()
            proc.wait(timeout=30)
            kube.core.delete_namespace(ns)
    print("| operator | runs | p50 s | p95 s | max s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for src, values in times.items():
        ordered = sorted(values)
        p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
        print(
            f"| {src} | {len(values)} | {statistics.median(values):.2f} | {p95:.2f} "
            f"| {max(values):.2f} |"
        )
        print("  each:", " ".join(f"{v:.2f}" for v in values))


if __name__ == "__main__":
    main()
