"""Prometheus metrics of the operator.

The first three keep the names and meaning of the seed app's metrics so existing
dashboards and alerts carry over. Gauges that describe the cluster (in-flight Jobs,
queue depth, oldest in-flight age) are recomputed from the cluster by the operator-wide
loop, so they are right after an operator restart instead of drifting like counters.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# Seed buckets (0.5..30 s) extended upwards: real videos take minutes.
LATENCY_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
PHASE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

JOBS_QUEUED_TOTAL = Counter(
    "clip_jobs_queued",
    "Jobs accepted via ClipJob creation (ClipJobs the operator accepted for processing).",
)
JOBS_INFLIGHT = Gauge(
    "clip_jobs_inflight",
    "Kubernetes Jobs of ClipJobs running now (derived from the cluster).",
)
JOB_LATENCY = Histogram(
    "clip_job_latency_seconds",
    "Time from ClipJob creation to its terminal phase, by outcome (done|error).",
    ["status"],
    buckets=LATENCY_BUCKETS,
)
RECONCILE_TOTAL = Counter(
    "clip_operator_reconcile",
    "Reconciles and resyncs by handler (reconcile|resync) and result (success|error).",
    ["handler", "result"],
)
RECONCILE_DURATION = Histogram(
    "clip_operator_reconcile_duration_seconds",
    "Handler run time by handler.",
    ["handler"],
    buckets=RECONCILE_BUCKETS,
)
RECONCILE_ERRORS = Counter(
    "clip_operator_reconcile_errors",
    "Handler invocations that raised, by handler and exception type.",
    ["handler", "error"],
)
QUEUE_DEPTH = Gauge(
    "clip_jobs_queue_depth",
    "ClipJobs in phase Queued waiting for an in-flight slot.",
)
NAMESPACE_QUEUED = Gauge(
    "clip_jobs_namespace_queued",
    "ClipJobs in phase Queued (waiting for a slot or backing off after a refused Job "
    "create), per namespace; a namespace with none has no series.",
    ["namespace"],
)
NAMESPACE_INFLIGHT = Gauge(
    "clip_jobs_namespace_inflight",
    "Kubernetes Jobs of ClipJobs running now, per namespace; a namespace with none has no series.",
    ["namespace"],
)
BUILD_INFO = Gauge(
    "clip_operator_build_info",
    "Always 1; the labels say which operator runs: version, python, kopf.",
    ["version", "python", "kopf"],
)
OLDEST_INFLIGHT_AGE = Gauge(
    "clip_jobs_oldest_inflight_age_seconds",
    "Age of the oldest Job in flight (0 when none).",
)
WORKER_PHASE_SECONDS = Histogram(
    "clip_worker_phase_seconds",
    "Worker phase durations from the termination message (download, encode, upload, total).",
    ["phase"],
    buckets=PHASE_BUCKETS,
)
WORKER_BYTES_TOTAL = Counter(
    "clip_worker_bytes",
    "Bytes the workers fetched from sources and uploaded to S3.",
    ["direction"],
)

JOB_CREATE_REFUSED = Counter(
    "clip_jobs_create_refused",
    "Job creates the API refused (quota, admission webhook, throttling), by namespace.",
    ["namespace"],
)
JOBS_EXPIRED = Counter(
    "clip_jobs_expired",
    "Finished ClipJobs the operator deleted at the end of their ttlSecondsAfterFinished.",
)
DEDUPE = Counter(
    "clip_dedupe",
    "Dedupe verdicts on new ClipJobs: hit (served from an identical clip, no Job), miss "
    "(it makes the clip), twin (it waits for an identical one being made).",
    ["result"],
)
ADMISSION_SECONDS = Histogram(
    "clip_operator_admission_seconds",
    "From a ClipJob being granted an in-flight slot to its Job created.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STATUS_WRITES = Counter(
    "clip_operator_status_writes",
    "ClipJob status patches the operator sent.",
)
WORKQUEUE_DEPTH = Gauge(
    "clip_operator_workqueue_depth",
    "Keys ready for a reconcile worker now.",
)
WORKQUEUE_DELAYED = Gauge(
    "clip_operator_workqueue_delayed",
    "Keys waiting for a requeue-after timer or a backoff.",
)
EVENT_LOOP_LAG = Histogram(
    "clip_operator_event_loop_lag_seconds",
    "How late a 0.5 s timer on the operator's event loop fires.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LEADER = Gauge(
    "clip_operator_leader",
    "1 while this replica reconciles (holds the leader Lease, or runs without leader "
    "election), 0 while it stands by.",
)
LEADER_TRANSITIONS = Counter(
    "clip_operator_leader_transitions",
    "Times this replica became the leader.",
)
NOTIFICATIONS_TOTAL = Counter(
    "clip_notifications",
    "Webhook deliveries that ended, by result: delivered, gave_up (retry time ran out), "
    "rejected (3xx/4xx), refused (address guard, Secret, URL: nothing sent).",
    ["result"],
)
NOTIFICATION_SECONDS = Histogram(
    "clip_notification_delivery_seconds",
    "From the start of a webhook delivery to the receiver's 2xx, retries included.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600),
)
NOTIFY_RESULTS = ("delivered", "gave_up", "rejected", "refused")

RESULTS = ("success", "error")
# The `handler` label values the operator uses (tests/unit/test_metrics.py keeps this in
# sync with the code): reconciles of the work queue, and the periodic resync.
HANDLERS = ("reconcile", "resync")
WORKER_PHASES = ("download", "encode", "upload", "total")


def _initialise_series() -> None:
    """Create every known label combination at 0.

    A labelled series only appears once touched, so without this an error ratio or an
    error-rate panel has no data (instead of 0) until the first error happens.
    """
    for status in ("done", "error"):
        JOB_LATENCY.labels(status)
    for handler in HANDLERS:
        RECONCILE_DURATION.labels(handler)
        for result in RESULTS:
            RECONCILE_TOTAL.labels(handler, result)
    for phase in WORKER_PHASES:
        WORKER_PHASE_SECONDS.labels(phase)
    for direction in ("fetched", "uploaded"):
        WORKER_BYTES_TOTAL.labels(direction)
    for result in NOTIFY_RESULTS:
        NOTIFICATIONS_TOTAL.labels(result)


_initialise_series()


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


BUILD_INFO.labels(_version("clip-operator"), platform.python_version(), _version("kopf")).set(1)

# The namespaces each per-namespace gauge has a series for (to remove the ones that empty).
_namespace_series: dict[int, set[str]] = {}


def set_per_namespace(gauge: Gauge, counts: dict[str, int]) -> None:
    """Set `gauge{namespace}` to counts; a namespace that dropped to 0 or vanished loses
    its series (no stale series per namespace that once had ClipJobs)."""
    known = _namespace_series.get(id(gauge), set())
    current = {ns for ns, n in counts.items() if n > 0}
    for ns in known - current:
        gauge.remove(ns)
    for ns in current:
        gauge.labels(ns).set(counts[ns])
    _namespace_series[id(gauge)] = current


_server_lock = threading.Lock()
_server_port: int | None = None


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> bool:
    """Serve /metrics once per process; later calls are no-ops. Returns True if started."""
    global _server_port
    with _server_lock:
        if _server_port is not None or port <= 0:
            return False
        start_http_server(port, addr=addr)
        _server_port = port
        return True


def metrics_server_port() -> int | None:
    """The port /metrics is served on in this process, or None before it is started."""
    with _server_lock:
        return _server_port


@contextmanager
def observe_reconcile(handler: str) -> Iterator[None]:
    """Time a reconcile (or resync) and count its result."""
    started = time.monotonic()
    try:
        yield
    except Exception as exc:
        RECONCILE_TOTAL.labels(handler, "error").inc()
        RECONCILE_ERRORS.labels(handler, type(exc).__name__).inc()
        raise
    else:
        RECONCILE_TOTAL.labels(handler, "success").inc()
    finally:
        RECONCILE_DURATION.labels(handler).observe(time.monotonic() - started)


def record_worker_result(result: dict[str, object]) -> None:
    """Feed phase timings and byte counts from a worker's termination JSON."""
    timings = result.get("timings")
    if isinstance(timings, dict):
        for phase in WORKER_PHASES:
            value = timings.get(f"{phase}Seconds")
            # bool is an int subclass: a stray `true` must not count as 1 s or 1 byte.
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                WORKER_PHASE_SECONDS.labels(phase).observe(float(value))
    for key, direction in (("bytesFetched", "fetched"), ("sizeBytes", "uploaded")):
        value = result.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            WORKER_BYTES_TOTAL.labels(direction).inc(value)
