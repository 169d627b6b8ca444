"""The operator's metrics: the /metrics server, reconcile accounting, worker results."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from clip_operator import metrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# Run in a fresh interpreter: the server is per process, and other tests may already
# have started it in this one. Eight threads race to start it on eight ports.
SERVER_CHILD = textwrap.dedent(
    """
    import sys, threading
    from clip_operator import metrics

    ports = [int(p) for p in sys.argv[1:]]
    results = {}
    barrier = threading.Barrier(len(ports))

    def start(port):
        barrier.wait()
        results[port] = metrics.start_metrics_server(port, addr="127.0.0.1")

    threads = [threading.Thread(target=start, args=(p,)) for p in ports]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    again = metrics.start_metrics_server(metrics.metrics_server_port(), addr="127.0.0.1")
    started = [p for p, ok in results.items() if ok]
    print(",".join(map(str, started)), metrics.metrics_server_port(), again, flush=True)
    sys.stdin.read()  # keep serving until the test closes stdin
    """
)


def test_start_metrics_server_serves_once_per_process() -> None:
    ports = sorted({free_port() for _ in range(8)})
    env = dict(os.environ)
    src = str(Path(metrics.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER_CHILD, *map(str, ports)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        started, served, again = child.stdout.readline().rstrip("\n").split(" ")
        assert started == served, f"exactly one call starts the server, got {started}"
        assert again == "False", "a second call on the same port is a no-op"
        port = int(served)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b"clip_jobs_inflight" in body
        assert [p for p in ports if listening(p)] == [port], "only one port serves /metrics"
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)


def test_start_metrics_server_ignores_port_zero() -> None:
    before = metrics.metrics_server_port()
    assert metrics.start_metrics_server(0) is False
    assert metrics.metrics_server_port() == before


def test_seed_metrics_keep_their_names() -> None:
    names = {m.name for m in REGISTRY.collect()}
    assert {"clip_jobs_queued", "clip_jobs_inflight", "clip_job_latency_seconds"} <= names
    text = {m.name: m for m in REGISTRY.collect()}
    assert text["clip_jobs_queued"].type == "counter"
    assert text["clip_jobs_inflight"].type == "gauge"
    assert text["clip_job_latency_seconds"].type == "histogram"
    bounds = {
        s.labels["le"]
        for s in text["clip_job_latency_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["status"] == "done"
    }
    # The seed's buckets are still there, extended upwards.
    assert {"0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "300.0", "+Inf"} <= bounds


def test_handler_labels_match_the_operator_code() -> None:
    """HANDLERS (pre-created series, dashboards, docs) are the labels the code really uses."""
    source = "\n".join(
        path.read_text(encoding="utf-8")
        for path in Path(metrics.__file__).parent.glob("*.py")
        if path.name != "metrics.py"
    )
    used = set(re.findall(r'(?:reconcile_logged\([^)]*?|observe_reconcile\()\s*"(\w+)"', source))
    assert used, "found no handler labels in the operator code"
    assert used == set(metrics.HANDLERS)


def test_known_series_exist_before_first_use() -> None:
    """Ratios and error panels show 0, not "no data", before the first error."""
    for status in ("done", "error"):
        assert (
            REGISTRY.get_sample_value("clip_job_latency_seconds_count", {"status": status})
            is not None
        )
    for handler in metrics.HANDLERS:
        for result in metrics.RESULTS:
            labels = {"handler": handler, "result": result}
            assert REGISTRY.get_sample_value("clip_operator_reconcile_total", labels) is not None


@pytest.mark.parametrize(
    ("exc", "result", "error"),
    [
        (None, "success", None),
        (ValueError("boom"), "error", "ValueError"),
    ],
)
def test_observe_reconcile_counts_results(
    exc: Exception | None, result: str, error: str | None
) -> None:
    handler = "reconcile"
    totals = {
        r: value("clip_operator_reconcile_total", handler=handler, result=r)
        for r in metrics.RESULTS
    }
    runs = value("clip_operator_reconcile_duration_seconds_count", handler=handler)
    errors = value("clip_operator_reconcile_errors_total", handler=handler, error=error or "")

    if exc is None:
        with metrics.observe_reconcile(handler):
            pass
    else:
        with pytest.raises(type(exc)) as raised, metrics.observe_reconcile(handler):
            raise exc
        assert raised.value is exc, "the handler's exception reaches kopf unchanged"

    for r in metrics.RESULTS:
        expected = totals[r] + (1 if r == result else 0)
        assert value("clip_operator_reconcile_total", handler=handler, result=r) == expected, r
    assert value("clip_operator_reconcile_duration_seconds_count", handler=handler) == runs + 1
    if error is not None:
        after = value("clip_operator_reconcile_errors_total", handler=handler, error=error)
        assert after == errors + 1


def test_record_worker_result_feeds_phases_and_bytes() -> None:
    phases = ("download", "encode", "upload", "total")
    counts = {p: value("clip_worker_phase_seconds_count", phase=p) for p in phases}
    sums = {p: value("clip_worker_phase_seconds_sum", phase=p) for p in phases}
    fetched = value("clip_worker_bytes_total", direction="fetched")
    uploaded = value("clip_worker_bytes_total", direction="uploaded")
    small = value("clip_worker_phase_seconds_bucket", phase="encode", le="2.5")

    # The worker's success JSON, as in job-image/README.md.
    metrics.record_worker_result(
        {
            "bucket": "clips",
            "key": "media/chorus-3f9a1c.mp4",
            "sizeBytes": 1234567,
            "bytesFetched": 2345678,
            "timings": {
                "resolveSeconds": 0.4,
                "downloadSeconds": 1.25,
                "encodeSeconds": 2,
                "uploadSeconds": 0.5,
                "totalSeconds": 4.0,
            },
        }
    )
    observed = {"download": 1.25, "encode": 2.0, "upload": 0.5, "total": 4.0}
    for p in phases:
        assert value("clip_worker_phase_seconds_count", phase=p) == counts[p] + 1
        assert value("clip_worker_phase_seconds_sum", phase=p) == pytest.approx(
            sums[p] + observed[p]
        )
    assert value("clip_worker_phase_seconds_bucket", phase="encode", le="2.5") == small + 1
    assert value("clip_worker_bytes_total", direction="fetched") == fetched + 2345678
    assert value("clip_worker_bytes_total", direction="uploaded") == uploaded + 1234567


@pytest.mark.parametrize(
    "result",
    [
        {"reason": "SourceNotFound", "message": "HTTP 404"},
        {"timings": "soon", "sizeBytes": "12"},
        {"timings": {"downloadSeconds": -1, "encodeSeconds": None, "uploadSeconds": True}},
        {"sizeBytes": -5, "bytesFetched": True},
        {"sizeBytes": 1.5},
    ],
)
def test_record_worker_result_ignores_failures_and_garbage(result: dict[str, object]) -> None:
    before = [
        (m.name, s.name, tuple(sorted(s.labels.items())), s.value)
        for m in REGISTRY.collect()
        if m.name in ("clip_worker_phase_seconds", "clip_worker_bytes")
        for s in m.samples
        if not s.name.endswith("_created")
    ]
    metrics.record_worker_result(result)
    after = [
        (m.name, s.name, tuple(sorted(s.labels.items())), s.value)
        for m in REGISTRY.collect()
        if m.name in ("clip_worker_phase_seconds", "clip_worker_bytes")
        for s in m.samples
        if not s.name.endswith("_created")
    ]
    assert after == before
