"""Mixed ClipJob traffic through the real operator on the local control plane, scraped by a
real Prometheus at the chart's ServiceMonitor interval, for the dashboards' pictures.

    CLUSTER_DIR=/tmp/traffic-cluster python -m bench.traffic.run --seconds 1800
    python docs/dashboards/render.py --prometheus http://127.0.0.1:19091 --scrape-interval 30 \\
        --start <start> --end <end> --out docs/dashboards dashboards/*.json   # printed at the end

What runs: `hack/cluster up` (etcd, kube-apiserver, kube-controller-manager with the Job
controller), the operator (`clip-operator run`, in-flight limit 100, two tenant
namespaces), `hack/prometheus.sh start` scraping its /metrics every
`metrics.serviceMonitor.interval` of charts/clip-operator/values.yaml, and a node played
through the API (tests/kubelet_sim.py, as bench/operator does): each Pod the Job
controller creates is started, runs for the clip's work time and ends the way a worker
ends. A missing source ends with exit 3 and {"reason": "SourceNotFound"}, so the Job's
podFailurePolicy fails the Job and the operator fails the ClipJob, exactly as with a real
worker; a flaky source fails its first attempt with exit 1 (NetworkError) and the Job's
retry succeeds. The schedule is bench/traffic/plan.py.

Bounded: at most --max-clipjobs ClipJobs, --seconds of arrivals, then at most --drain
seconds for the last ones to finish. The operator and the node stop at the end;
Prometheus keeps running (its data is the dashboards' source) until
`CLIP_PROM_PORT=... CLIP_PROM_STATE=... hack/prometheus.sh stop` (printed at the end).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.operator.run import wait_healthy  # noqa: E402
from bench.traffic import plan as schedule  # noqa: E402
from tests.kubelet_sim import env_of, finish_pod, start_pod, success_message  # noqa: E402
from tests.plugins.cluster import Kube  # noqa: E402

GROUP, VERSION, PLURAL = "mememaker.io", "v1alpha1", "clipjobs"
SOURCE = "http://127.0.0.1:9/{outcome}/{name}.mp4"


def chart_scrape_interval() -> str:
    """metrics.serviceMonitor.interval of the chart's values.yaml (e.g. '30s')."""
    text = (REPO / "charts/clip-operator/values.yaml").read_text()
    block = text.split("serviceMonitor:", 1)[1]
    match = re.search(r"^\s+interval:\s*(\S+)", block, re.M)
    if not match:
        raise SystemExit("no metrics.serviceMonitor.interval in charts/clip-operator/values.yaml")
    return match.group(1)


class Node:
    """Plays the kubelet for the worker Pods of the tenant namespaces (bounded in time)."""

    def __init__(self, kube: Kube, namespaces: tuple[str, ...], max_seconds: float) -> None:
        self.kube, self.namespaces = kube, namespaces
        self.deadline = time.monotonic() + max_seconds
        self.stop = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=4)
        self.timers: list[tuple[float, int, str, Any]] = []
        self.cond = threading.Condition()
        self.seen: set[str] = set()
        self.attempts: dict[str, int] = {}  # Job name -> Pods seen
        self.ended: dict[str, int] = {"succeeded": 0, "failed": 0}
        self.errors: list[str] = []
        self._n = 0

    def start(self) -> None:
        for ns in self.namespaces:
            threading.Thread(target=self._watch, args=(ns,), daemon=True).start()
        threading.Thread(target=self._timers, daemon=True).start()

    def _at(self, when: float, action: str, pod: Any) -> None:
        with self.cond:
            self._n += 1
            heapq.heappush(self.timers, (when, self._n, action, pod))
            self.cond.notify()

    def _watch(self, ns: str) -> None:
        from kubernetes import watch

        while not self.stop.is_set() and time.monotonic() < self.deadline:
            try:
                for ev in watch.Watch().stream(
                    self.kube.core.list_namespaced_pod, ns, timeout_seconds=30
                ):
                    pod = ev["object"]
                    name = pod.metadata.name
                    new = name not in self.seen and not pod.metadata.deletion_timestamp
                    if ev["type"] == "ADDED" and pod.status.phase == "Pending" and new:
                        self.seen.add(name)
                        job = pod.metadata.labels.get("batch.kubernetes.io/job-name", "")
                        self.attempts[job] = self.attempts.get(job, 0) + 1
                        self._at(time.monotonic() + 1.0, "start", pod)
                    if self.stop.is_set():
                        break
            except Exception as exc:  # a dropped watch: list again (seen keeps it once)
                self.errors.append(f"watch {ns}: {type(exc).__name__}: {exc}")
                self.stop.wait(1.0)

    def _timers(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            with self.cond:
                now = time.monotonic()
                if not self.timers or self.timers[0][0] > now:
                    wait = self.timers[0][0] - now if self.timers else 1.0
                    self.cond.wait(min(wait, 1.0))
                    continue
                _, _, action, pod = heapq.heappop(self.timers)
            self.pool.submit(self._act, action, pod)

    def _act(self, action: str, pod: Any) -> None:
        try:
            if action == "start":
                start_pod(self.kube, pod)
                env = env_of(pod)
                clip = float(env["CLIP_END"]) - float(env["CLIP_START"])
                self._at(time.monotonic() + schedule.work_seconds(clip), "finish", pod)
                return
            code, message = self.outcome(pod)
            finish_pod(self.kube, pod, code, message)
            self.ended["succeeded" if code == 0 else "failed"] += 1
        except Exception as exc:
            self.errors.append(f"{action} {pod.metadata.name}: {type(exc).__name__}: {exc}")

    def outcome(self, pod: Any) -> tuple[int, Any]:
        env = env_of(pod)
        url = env["CLIP_SOURCE_URL"]
        job = pod.metadata.labels.get("batch.kubernetes.io/job-name", "")
        if f"/{schedule.MISSING}/" in url:
            return 3, {"reason": "SourceNotFound", "message": f"HTTP 404 for {url}"}
        if f"/{schedule.FLAKY}/" in url and self.attempts.get(job, 1) == 1:
            return 1, {"reason": "NetworkError", "message": f"connection reset fetching {url}"}
        clip = float(env["CLIP_END"]) - float(env["CLIP_START"])
        work = schedule.work_seconds(clip)
        result = success_message(pod, size=int(150_000 * clip))
        result["bytesFetched"] = int(600_000 * clip)
        result["timings"] = {
            "downloadSeconds": round(0.45 * work, 2),
            "encodeSeconds": round(0.45 * work, 2),
            "uploadSeconds": round(0.1 * work, 2),
            "totalSeconds": round(work, 2),
        }
        return 0, result

    def close(self) -> None:
        self.stop.set()
        with self.cond:
            self.cond.notify_all()
        self.pool.shutdown(wait=False, cancel_futures=True)


def start_operator(
    kube: Kube, namespaces: list[str], log: Path, metrics_port: int, health_port: int, limit: int
) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIP_OPERATOR_")}
    env.update(
        KUBECONFIG=kube.kubeconfig,
        CLIP_OPERATOR_METRICS_PORT=str(metrics_port),
        CLIP_OPERATOR_HEALTH_PORT=str(health_port),
        CLIP_OPERATOR_S3_BUCKET="clips",
        CLIP_OPERATOR_IN_FLIGHT_LIMIT=str(limit),
        AWS_ACCESS_KEY_ID="traffic",
        AWS_SECRET_ACCESS_KEY="traffic",
    )
    cmd = [sys.executable, "-m", "clip_operator", "run"]
    for ns in namespaces:
        cmd += ["--namespace", ns]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return wait_healthy(proc, health_port, f"see {log}")


def create(kube: Kube, a: schedule.Arrival, namespace: str, errors: list[str]) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClipJob",
        "metadata": {"name": a.name, "labels": {"traffic/phase": a.phase}},
        "spec": {
            "source": {"url": SOURCE.format(outcome=a.outcome, name=a.name)},
            "start": "0",
            "end": f"{a.clip_seconds:g}",
        },
    }
    for attempt in range(5):
        try:
            kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
            return
        except Exception as exc:
            if attempt == 4:
                errors.append(f"create {namespace}/{a.name}: {exc}")
            time.sleep(0.5 * (attempt + 1))


def phases_now(kube: Kube, namespaces: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ns in namespaces:
        for obj in kube.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]:
            phase = (obj.get("status") or {}).get("phase") or "New"
            counts[phase] = counts.get(phase, 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1800, help="arrivals span (30 min)")
    parser.add_argument("--drain", type=float, default=600, help="max wait for the last ones")
    parser.add_argument("--max-clipjobs", type=int, default=2000)
    parser.add_argument("--in-flight-limit", type=int, default=100)
    parser.add_argument("--prom-port", type=int, default=19091)
    parser.add_argument("--metrics-port", type=int, default=18880)
    parser.add_argument("--out", type=Path, default=REPO / "bench/traffic/results.json")
    args = parser.parse_args()
    cluster_dir = Path(os.environ.get("CLUSTER_DIR") or REPO / ".cluster")
    workdir = cluster_dir / "traffic"
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(REPO / "hack/cluster"), "up"], check=True, stdout=subprocess.DEVNULL)
    kube = Kube(str(cluster_dir / "kubeconfig"), "kubectl")
    from kubernetes import client

    # Fresh tenant namespaces per run (an earlier run's ClipJobs keep their finalizers
    # once its operator is gone, so its namespaces cannot be reused at once).
    suffix = time.strftime("%H%M%S")
    tenants = {base: f"{base}-{suffix}" for base in schedule.NAMESPACES}
    for ns in tenants.values():
        kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    interval = chart_scrape_interval()
    prom_env = dict(
        os.environ,
        CLIP_PROM_PORT=str(args.prom_port),
        CLIP_PROM_STATE=str(workdir / "prometheus"),
        CLIP_PROM_TARGETS=f"127.0.0.1:{args.metrics_port}",
        CLIP_PROM_SCRAPE_INTERVAL=interval,
        CLIP_PROM_RETENTION="15d",
    )
    subprocess.run([str(REPO / "hack/prometheus.sh"), "start"], check=True, env=prom_env)
    arrivals = schedule.plan(args.seconds, args.max_clipjobs)
    node = Node(kube, tuple(tenants.values()), args.seconds + args.drain + 120)
    node.start()
    operator = start_operator(
        kube,
        list(tenants.values()),
        workdir / "operator.log",
        args.metrics_port,
        args.metrics_port + 1,
        args.in_flight_limit,
    )
    errors: list[str] = []
    t0, wall0 = time.monotonic(), time.time()
    planned = schedule.summary(arrivals)
    print(json.dumps({"start": wall0, "plan": planned, "scrape": interval}), flush=True)
    with ThreadPoolExecutor(max_workers=6) as pool:
        for i, a in enumerate(arrivals):
            delay = t0 + a.at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(create, kube, a, tenants[a.namespace], errors)
            if i % 100 == 0:
                print(f"{time.monotonic() - t0:7.0f}s created {i}/{len(arrivals)}", flush=True)
    remaining = t0 + args.seconds - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    window_end = time.time()
    drain_deadline = time.monotonic() + args.drain
    counts = phases_now(kube, list(tenants.values()))
    while time.monotonic() < drain_deadline:
        counts = phases_now(kube, list(tenants.values()))
        if counts.get("Succeeded", 0) + counts.get("Failed", 0) >= len(arrivals):
            break
        time.sleep(5)
    wall1 = time.time()
    operator.terminate()
    try:
        operator.wait(timeout=30)
    except subprocess.TimeoutExpired:
        operator.kill()
    node.close()
    result = {
        "command": " ".join(["python -m bench.traffic.run", *sys.argv[1:]]),
        "start": round(wall0, 1),
        "window_end": round(window_end, 1),
        "end": round(wall1, 1),
        "seconds": round(wall1 - wall0, 1),
        "scrape_interval": interval,
        "in_flight_limit": args.in_flight_limit,
        "namespaces": list(tenants.values()),
        "plan": planned,
        "clipjob_phases": counts,
        "pods_ended": node.ended,
        "errors": (errors + node.errors)[:20],
        "prometheus": f"http://127.0.0.1:{args.prom_port}",
        "render": (
            f"python docs/dashboards/render.py --prometheus http://127.0.0.1:{args.prom_port}"
            f" --scrape-interval {interval.rstrip('s')} --start {wall0:.0f}"
            f" --end {wall0 + args.seconds:.0f} --out docs/dashboards dashboards/*.json"
        ),
        "stop_prometheus": (
            f"CLIP_PROM_PORT={args.prom_port} CLIP_PROM_STATE={workdir / 'prometheus'}"
            " hack/prometheus.sh stop"
        ),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1), flush=True)


if __name__ == "__main__":
    main()
