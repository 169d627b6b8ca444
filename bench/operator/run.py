"""Operator scale benchmark on the local control plane (hack/cluster).

    python -m bench.operator.run --burst 100 --burst 1000 --burst 5000 --steady 50:60

For each run: a fresh namespace, the real operator (`clip-operator run`, in-flight limit
off), N ClipJobs created as fast as the API server accepts them (or at a steady rate),
and a Pod completer that plays the node: every Pod the Job controller creates is marked
Succeeded with a worker result (one pods/status write, as a kubelet would). Timestamps
come from this process's own watches, so every latency below is measured the same way:

- ClipJob created (create call returned) -> its Job seen
- Job complete seen -> ClipJob Succeeded seen
- Job seen -> its Pod seen: the Kubernetes Job controller, the Go reference
- writes to each ClipJob (MODIFIED events: status and metadata patches), Events posted
- API requests by verb from kube-apiserver's apiserver_request_total, before/after
- operator peak RSS (VmHWM) and CPU seconds, from /proc (also at start: start-up's share)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.kubelet_sim import finish_pod, success_message  # noqa: E402
from tests.plugins.cluster import Kube, free_port  # noqa: E402

GROUP, VERSION, PLURAL = "mememaker.io", "v1alpha1", "clipjobs"
OPERATOR_RESOURCES = {"clipjobs", "jobs", "events", "pods", "secrets"}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(pct(values, 50), 4),
        "p95": round(pct(values, 95), 4),
        "p99": round(pct(values, 99), 4),
        "max": round(max(values), 4) if values else float("nan"),
        "mean": round(statistics.fmean(values), 4) if values else float("nan"),
    }


def apiserver_requests(kube: Kube) -> Counter[tuple[str, str, str]]:
    """apiserver_request_total summed by (verb, resource, subresource)."""
    resp = kube.api.call_api(
        "/metrics",
        "GET",
        auth_settings=["BearerToken"],
        _preload_content=False,
        _return_http_data_only=True,
    )
    counts: Counter[tuple[str, str, str]] = Counter()
    for line in resp.data.decode().splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, value = line[len("apiserver_request_total{") :].rsplit("} ", 1)
        labels = dict(
            part.split("=", 1) for part in labels_text.replace('"', "").split(",") if "=" in part
        )
        key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
        counts[key] += int(float(value))
    return counts


class Recorder:
    """Watches ClipJobs, Jobs and Pods of one namespace and timestamps what it sees."""

    def __init__(self, kube: Kube, namespace: str, complete_pods: bool) -> None:
        self.kube, self.ns = kube, namespace
        self.complete_pods = complete_pods
        self.created: dict[str, float] = {}
        self.job_seen: dict[str, float] = {}  # clipjob name -> Job ADDED
        self.job_name_to_clip: dict[str, str] = {}
        self.job_done: dict[str, float] = {}
        self.pod_seen: dict[str, float] = {}  # job name -> first Pod ADDED
        self.succeeded: dict[str, float] = {}
        self.writes: Counter[str] = Counter()
        self.stop = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=8)
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        for target in (self._watch_clipjobs, self._watch_jobs, self._watch_pods):
            threading.Thread(target=target, daemon=True).start()

    def _stream(self, list_fn: Any, *args: Any, handle: Any) -> None:
        from kubernetes import watch

        rv = None
        while not self.stop.is_set():
            w = watch.Watch()
            try:
                kwargs: dict[str, Any] = {"timeout_seconds": 30}
                if rv:
                    kwargs["resource_version"] = rv
                for ev in w.stream(list_fn, *args, **kwargs):
                    obj = ev["object"]
                    meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata
                    rv = (
                        meta["resourceVersion"] if isinstance(meta, dict) else meta.resource_version
                    )
                    handle(ev["type"], obj, time.monotonic())
                    if self.stop.is_set():
                        break
            except Exception as exc:
                self.errors.append(f"watch: {exc}")
                rv = None
                time.sleep(0.5)

    def _watch_clipjobs(self) -> None:
        def handle(kind: str, obj: dict[str, Any], now: float) -> None:
            name = obj["metadata"]["name"]
            if kind == "MODIFIED":
                self.writes[name] += 1
            phase = (obj.get("status") or {}).get("phase")
            if phase == "Succeeded" and name not in self.succeeded:
                self.succeeded[name] = now

        self._stream(
            self.kube.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.ns,
            PLURAL,
            handle=handle,
        )

    def _watch_jobs(self) -> None:
        def handle(kind: str, job: Any, now: float) -> None:
            clip = (job.metadata.labels or {}).get("mememaker.io/clipjob")
            if not clip:
                return
            if kind == "ADDED" and clip not in self.job_seen:
                self.job_seen[clip] = now
                self.job_name_to_clip[job.metadata.name] = clip
            for cond in job.status.conditions or []:
                if cond.type == "Complete" and cond.status == "True" and clip not in self.job_done:
                    self.job_done[clip] = now

        self._stream(self.kube.batch.list_namespaced_job, self.ns, handle=handle)

    def _watch_pods(self) -> None:
        def handle(kind: str, pod: Any, now: float) -> None:
            job = (pod.metadata.labels or {}).get("batch.kubernetes.io/job-name")
            if kind != "ADDED" or not job:
                return
            self.pod_seen.setdefault(job, now)
            if self.complete_pods and pod.status.phase == "Pending":
                self.pool.submit(self._complete, pod)

        self._stream(self.kube.core.list_namespaced_pod, self.ns, handle=handle)

    def _complete(self, pod: Any) -> None:
        try:
            finish_pod(self.kube, pod, 0, success_message(pod))
        except Exception as exc:
            self.errors.append(f"complete {pod.metadata.name}: {exc}")

    def close(self) -> None:
        self.stop.set()
        self.pool.shutdown(wait=False, cancel_futures=True)


def proc_stats(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "peak_rss_mb": int(fields["VmHWM"].split()[0]) / 1024,
        "cpu_seconds": (int(stat[11]) + int(stat[12])) / ticks,
    }


def start_operator(
    kube: Kube, ns: str, log_path: Path, settings: dict[str, str]
) -> subprocess.Popen[bytes]:
    health, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIP_OPERATOR_")}
    env.update(
        KUBECONFIG=kube.kubeconfig,
        CLIP_OPERATOR_METRICS_PORT=str(metrics_port),
        CLIP_OPERATOR_HEALTH_PORT=str(health),
        CLIP_OPERATOR_S3_BUCKET="clips",
        CLIP_OPERATOR_IN_FLIGHT_LIMIT="0",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
    )
    env.update({f"CLIP_OPERATOR_{k.upper()}": v for k, v in settings.items()})
    src = os.environ.get("BENCH_OPERATOR_SRC")  # an older checkout, for before/after runs
    if src:
        env["PYTHONPATH"] = str(Path(src) / "operator")
    cmd = [sys.executable, "-m", "clip_operator", "run", "--namespace", ns]
    profile = os.environ.get("BENCH_CPROFILE")  # cProfile the operator to find hot spots
    if profile:
        cmd[1:1] = ["-m", "cProfile", "-o", profile]
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    proc.metrics_port = metrics_port  # type: ignore[attr-defined]
    return wait_healthy(proc, health, f"see {log_path}")


def wait_healthy(
    proc: subprocess.Popen[bytes], health_port: int, why: str, timeout: float = 60
) -> subprocess.Popen[bytes]:
    """Wait for the operator's /healthz; kill it and stop the bench if it never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"operator did not become healthy; {why}")


def histogram_quantiles(text: str, name: str) -> dict[str, float]:
    """p50/p99 of a Prometheus histogram from /metrics text (histogram_quantile's way)."""
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    out: dict[str, float] = {"n": total}
    for q in (0.5, 0.99):
        if not total:
            out[f"p{int(q * 100)}"] = float("nan")
            continue
        rank, prev_le, prev_count = q * total, 0.0, 0.0
        for le, count in buckets:
            if count >= rank:
                if le == float("inf"):
                    value = prev_le
                else:
                    span = count - prev_count
                    value = prev_le + (le - prev_le) * ((rank - prev_count) / span if span else 0)
                out[f"p{int(q * 100)}"] = round(value, 4)
                break
            prev_le, prev_count = le, count
    return out


def operator_metrics(port: int) -> dict[str, dict[str, float]]:
    """The operator's own view: slot-to-Job latency and event-loop lag."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    return {
        "admission_seconds": histogram_quantiles(text, "clip_operator_admission_seconds"),
        "event_loop_lag_seconds": histogram_quantiles(text, "clip_operator_event_loop_lag_seconds"),
    }


def create_clipjobs(
    kube: Kube, ns: str, names: list[str], rec: Recorder, rate: float | None
) -> float:
    body = lambda name: {  # noqa: E731
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClipJob",
        "metadata": {"name": name},
        "spec": {"source": {"url": "http://127.0.0.1:9/v.mp4"}, "start": "10", "end": "20"},
    }

    def one(name: str) -> None:
        for attempt in range(5):
            try:
                kube.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body(name))
                rec.created[name] = time.monotonic()
                return
            except Exception as exc:
                if attempt == 4:
                    rec.errors.append(f"create {name}: {exc}")
                time.sleep(0.2 * (attempt + 1))

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for i, name in enumerate(names):
            if rate:
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            pool.submit(one, name)
    return time.monotonic() - t0


def run_once(
    kube: Kube,
    label: str,
    n: int,
    rate: float | None,
    timeout: float,
    settings: dict[str, str],
    workdir: Path,
) -> dict[str, Any]:
    ns = f"bench-{label}-{uuid.uuid4().hex[:6]}"
    from kubernetes import client

    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    wait_default_sa(kube, ns)
    rec = Recorder(kube, ns, complete_pods=True)
    rec.start()
    op = start_operator(kube, ns, workdir / f"operator-{label}.log", settings)
    time.sleep(1.0)
    started_cpu = proc_stats(op.pid)["cpu_seconds"]  # start-up (imports, LISTs): not per ClipJob
    before = apiserver_requests(kube)
    names = [f"c{i:05d}" for i in range(n)]
    t0 = time.monotonic()
    create_seconds = create_clipjobs(kube, ns, names, rec, rate)
    deadline = t0 + timeout
    while len(rec.succeeded) < n and time.monotonic() < deadline:
        time.sleep(0.25)
    drain = (max(rec.succeeded.values()) - t0) if rec.succeeded else float("nan")
    time.sleep(2.0)  # let trailing writes land before counting
    after = apiserver_requests(kube)
    stats = proc_stats(op.pid)
    stats["start_cpu_seconds"] = started_cpu
    inside = operator_metrics(op.metrics_port)  # type: ignore[attr-defined]
    op.terminate()
    op.wait(timeout=30)
    rec.close()
    # Steady-state footprint: a fresh operator that lists all N finished ClipJobs and Jobs
    # (what a restart, or a long-running operator after the burst has settled, holds).
    fresh = start_operator(kube, ns, workdir / f"operator-{label}-fresh.log", settings)
    time.sleep(20)
    stats["fresh_rss_mb"] = proc_stats(fresh.pid)["rss_mb"]
    fresh.terminate()
    fresh.wait(timeout=30)
    delta = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) > 0}
    by_verb: Counter[str] = Counter()
    for (verb, resource, sub), count in delta.items():
        # The bench's own traffic (creating ClipJobs, writing Pod status) and the Job
        # controller's (Pods, Job status) are left out: what remains is the operator's.
        if resource == "clipjobs" and verb == "POST":
            continue
        if resource == "pods" and (sub == "status" or verb in ("POST", "PATCH")):
            continue
        if resource == "jobs" and sub == "status":
            continue
        if verb in ("DELETE", "DELETECOLLECTION"):
            continue  # namespace cleanup of earlier runs, GC and TTL: not the operator
        if resource in OPERATOR_RESOURCES:
            by_verb[f"{verb} {resource}{'/' + sub if sub else ''}"] += count
    clip_to_job = {v: k for k, v in rec.job_name_to_clip.items()}
    events: Counter[str] = Counter()
    for ev in kube.core.list_namespaced_event(ns).items:
        events[ev.reporting_component or (ev.source.component if ev.source else "") or "?"] += 1
    result = {
        "label": label,
        "n": n,
        "rate": rate,
        "namespace": ns,
        "succeeded": len(rec.succeeded),
        "create_seconds": round(create_seconds, 2),
        "drain_seconds": round(drain, 2),
        **inside,
        "clipjob_to_job": summary(
            [rec.job_seen[c] - rec.created[c] for c in rec.job_seen if c in rec.created]
        ),
        "job_complete_to_succeeded": summary(
            [rec.succeeded[c] - rec.job_done[c] for c in rec.succeeded if c in rec.job_done]
        ),
        "job_controller_job_to_pod": summary(
            [
                rec.pod_seen[clip_to_job[c]] - rec.job_seen[c]
                for c in rec.job_seen
                if clip_to_job.get(c) in rec.pod_seen
            ]
        ),
        "writes_per_clipjob": summary([float(rec.writes[c]) for c in names if c in rec.succeeded]),
        "operator_requests_per_clipjob": {
            k: round(v / max(1, n), 3) for k, v in sorted(by_verb.items())
        },
        "events_per_clipjob": {k: round(v / max(1, n), 2) for k, v in sorted(events.items())},
        "operator": {k: round(v, 1) for k, v in stats.items()},
        "errors": rec.errors[:10],
    }
    return result


def wait_default_sa(kube: Kube, ns: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(
            sa.metadata.name == "default"
            for sa in kube.core.list_namespaced_service_account(ns).items
        ):
            return
        time.sleep(0.2)


def cleanup_namespace(kube: Kube, ns: str) -> None:
    try:
        kube.core.delete_namespace(ns)
    except Exception as exc:
        print(f"cleanup {ns}: {exc}", file=sys.stderr)


def local_kube() -> Kube:
    """The local control plane (hack/cluster, its environment's ports), started if needed."""
    subprocess.run([str(REPO / "hack" / "cluster"), "up"], check=True, stdout=subprocess.DEVNULL)
    env_out = subprocess.run(
        [str(REPO / "hack" / "cluster"), "env"], capture_output=True, text=True
    ).stdout
    kubeconfig = next(
        line.split("=", 1)[1] for line in env_out.splitlines() if "KUBECONFIG" in line
    )
    return Kube(kubeconfig, "kubectl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, action="append", default=[], help="N ClipJobs at once")
    parser.add_argument("--steady", action="append", default=[], help="RATE:SECONDS, e.g. 50:60")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--setting", action="append", default=[], help="operator setting KEY=VALUE")
    parser.add_argument("--out", default="bench/operator/results.json")
    parser.add_argument("--tag", default="current")
    args = parser.parse_args()
    kube = local_kube()
    settings = dict(s.split("=", 1) for s in args.setting)
    workdir = Path(os.environ.get("CLUSTER_DIR") or REPO / ".cluster") / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    runs = []
    for n in args.burst:
        runs.append(run_once(kube, f"burst{n}", n, None, args.timeout, settings, workdir))
        print(json.dumps(runs[-1], indent=1), flush=True)
    for spec in args.steady:
        rate, seconds = (float(x) for x in spec.split(":"))
        n = int(rate * seconds)
        runs.append(run_once(kube, f"steady{int(rate)}", n, rate, args.timeout, settings, workdir))
        print(json.dumps(runs[-1], indent=1), flush=True)
    for run in runs:  # after all runs: namespace deletion traffic must not pollute the counts
        cleanup_namespace(kube, run["namespace"])
    out = Path(args.out)
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing[args.tag] = {
        "settings": settings,
        "runs": runs,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.write_text(json.dumps(existing, indent=1) + "\n")


if __name__ == "__main__":
    main()
