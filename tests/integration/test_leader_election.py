"""Two operator replicas on one Lease (issue 18): one reconciles, the other takes over.

Real `clip-operator run` processes (tests/plugins/cluster.py) with leader election on the
chart's settings (lease 12 s, renew deadline 8 s, retry 2 s), on a real kube-apiserver.
Pods are run to completion by tests/kubelet_sim.py; every Job ever created is counted by
the fault tier's JobLedger, and ClipJobs lost or duplicated by its Scenario.

Takeover is measured from the signal to the standby holding the Lease, and to the standby's
first Job for a ClipJob created right after the kill (what a user notices).
"""

from __future__ import annotations

import signal
import statistics
import threading
import time
from typing import Any

from tests.clipjobs import create, manifest
from tests.faults.ledger import JobLedger, Scenario, wait_until
from tests.kubelet_sim import Kubelet

LEASE = "clip-operator"
LEASE_SECONDS = 12.0
# A SIGKILLed leader renewed at most one retry period (2 s) before it died; the standby
# takes the Lease one lease duration after it saw that renewal, which it reads every 0.5 s
# (plus the read's own latency: 12.53 s was seen in CI on a loaded machine). Its first Job
# follows after a resync and a reconcile: issue 18's target, within 15 s of the kill
# (measured 12.8-13.4 s p50/max).
LEASE_BOUND = LEASE_SECONDS + 1.0
JOB_BOUND = 15.0
KILLS = 10
LOAD = 60  # ClipJobs created at a steady rate while the leaders are killed


def replica(operator_factory: Any, namespace: str, name: str, **settings: Any) -> Any:
    return operator_factory(
        env={"POD_NAME": name},
        leader_election="true",
        lease_name=LEASE,
        lease_namespace=namespace,  # the test's own Lease: tests never share one
        in_flight_limit=0,
        resync_seconds=60,
        dedupe="Off",  # every ClipJob here is the same clip: each must get its own Job
        **settings,
    )


def holder(kube: Any, namespace: str) -> str:
    from kubernetes import client

    lease = client.CoordinationV1Api(kube.api).read_namespaced_lease(
        LEASE, namespace, _request_timeout=5
    )
    return str(lease.spec.holder_identity or "")


def metric(op: Any, name: str) -> float:
    """Sum of a metric's samples whose line starts with `name` (labels included)."""
    total = 0.0
    for line in op.metrics().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def reconciles(op: Any) -> float:
    return metric(op, 'clip_operator_reconcile_total{handler="reconcile"')


def leader_and_standby(kube: Any, namespace: str, ops: list[Any]) -> tuple[Any, Any]:
    """Wait until one of `ops` holds the Lease and says so; (leader, standby)."""

    def found() -> tuple[Any, Any] | None:
        name = holder(kube, namespace)
        leaders = [op for op in ops if op.env["POD_NAME"] == name]
        if not leaders or metric(leaders[0], "clip_operator_leader ") != 1:
            return None
        (standby,) = [op for op in ops if op is not leaders[0]]
        return leaders[0], standby

    result: tuple[Any, Any] = wait_until("a leader", found, timeout=60, every=0.1)
    return result


def takeover(
    kube: Any, namespace: str, old: str, ledger: JobLedger, probe: str, started: float
) -> tuple[float, float]:
    """Seconds from `started` until (another holds the Lease, the probe ClipJob has a Job)."""
    lease_at = job_at = None
    deadline = started + 60
    while time.monotonic() < deadline and (lease_at is None or job_at is None):
        if lease_at is None:
            try:
                if holder(kube, namespace) not in ("", old):
                    lease_at = time.monotonic() - started
            except Exception:  # the API answers again at the next poll
                pass
        if job_at is None and ledger.jobs_of(probe):
            job_at = time.monotonic() - started
        time.sleep(0.05)
    assert lease_at is not None and job_at is not None, (lease_at, job_at)
    return lease_at, job_at


def test_ten_leader_kills_under_steady_load_lose_and_duplicate_nothing(
    kube: Any, namespace: str, operator_factory: Any
) -> None:
    a = replica(operator_factory, namespace, "replica-0")
    b = replica(operator_factory, namespace, "replica-1")  # healthy while standing by
    ledger = JobLedger(kube.kubeconfig, [namespace]).start()
    sc = Scenario("10 leader kills", kube, ledger)
    node = Kubelet(kube, namespace, run_seconds=0.5, max_seconds=900)
    node.start()
    stop = threading.Event()
    try:
        leader, standby = leader_and_standby(kube, namespace, [a, b])
        sc.expect(create(kube, namespace, manifest("first")), "Succeeded")
        wait_until("the first Job", lambda: ledger.jobs_of(sc.expectations[0].uid), 30)
        # Exactly one replica reconciles: the standby has not reconciled anything.
        assert reconciles(leader) > 0 and reconciles(standby) == 0
        assert metric(standby, "clip_operator_leader ") == 0

        def load() -> None:
            for i in range(LOAD):
                if stop.wait(3.0):
                    return
                sc.expect(create(kube, namespace, manifest(f"load-{i:02d}")), "Succeeded")

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        lease_times, job_times = [], []
        for kill in range(KILLS):
            old = leader.env["POD_NAME"]
            killed = time.monotonic()
            leader.kill(signal.SIGKILL)
            probe = create(kube, namespace, manifest(f"probe-{kill:02d}"))
            sc.expect(probe, "Succeeded")
            uid = probe["metadata"]["uid"]
            lease_s, job_s = takeover(kube, namespace, old, ledger, uid, killed)
            lease_times.append(lease_s)
            job_times.append(job_s)
            # The killed one comes back as a new Pod would: a new name, standing by.
            leader.env["POD_NAME"] = f"replica-{kill + 2}"
            leader.start()
            leader, standby = leader_and_standby(kube, namespace, [leader, standby])
            assert reconciles(standby) == 0, "a standby reconciled"
        loader.join(timeout=LOAD * 3 + 30)
        assert not loader.is_alive()
        lost = sc.wait(timeout=120, every=1.0)
        duplicates = sc.duplicates()
    finally:
        stop.set()
        node.stop()
        ledger.stop()
    print(
        f"\n{KILLS} SIGKILLs, {len(sc.expectations)} ClipJobs: Lease taken after "
        f"p50 {statistics.median(lease_times):.1f} s, max {max(lease_times):.1f} s; "
        f"probe ClipJob's Job after p50 {statistics.median(job_times):.1f} s, "
        f"max {max(job_times):.1f} s; lost {len(lost)}, duplicate Jobs {len(duplicates)}"
    )
    print("Lease taken (s):", " ".join(f"{t:.1f}" for t in lease_times))
    print("first Job (s):", " ".join(f"{t:.1f}" for t in job_times))
    assert not lost and not duplicates, (lost, duplicates)
    assert len(sc.expectations) == 1 + LOAD + KILLS
    assert max(lease_times) <= LEASE_BOUND, lease_times
    assert max(job_times) <= JOB_BOUND, job_times


def test_sigterm_releases_the_lease_and_the_standby_takes_over_at_once(
    kube: Any, namespace: str, operator_factory: Any
) -> None:
    a = replica(operator_factory, namespace, "replica-a")
    b = replica(operator_factory, namespace, "replica-b")
    ledger = JobLedger(kube.kubeconfig, [namespace]).start()
    try:
        leader, _ = leader_and_standby(kube, namespace, [a, b])
        old = leader.env["POD_NAME"]
        started = time.monotonic()
        leader.kill(signal.SIGTERM)  # returns once the process exited
        stopped = time.monotonic() - started
        probe = create(kube, namespace, manifest("after-sigterm"))
        uid = probe["metadata"]["uid"]
        lease_s, job_s = takeover(kube, namespace, old, ledger, uid, started)
    finally:
        ledger.stop()
    print(
        f"\nSIGTERM: leader exited after {stopped:.1f} s; from the signal, Lease taken after "
        f"{lease_s:.1f} s, a ClipJob created after the exit got its Job after {job_s:.1f} s"
    )
    assert leader.proc.returncode == 0
    # Released, not expired: far less than the lease duration.
    assert job_s < LEASE_SECONDS / 3, (lease_s, job_s)


def test_a_frozen_leader_steps_down_without_writing_once_the_standby_took_over(
    kube: Any, namespace: str, operator_factory: Any
) -> None:
    """SIGSTOP past the lease (a stalled node): on waking it must not write, but exit."""
    a = replica(operator_factory, namespace, "replica-a")
    b = replica(operator_factory, namespace, "replica-b")
    ledger = JobLedger(kube.kubeconfig, [namespace]).start()
    sc = Scenario("frozen leader", kube, ledger)
    try:
        leader, standby = leader_and_standby(kube, namespace, [a, b])
        frozen = leader.env["POD_NAME"]
        leader.pause()
        paused = time.monotonic()
        wait_until("the standby's Lease", lambda: holder(kube, namespace) != frozen, 30)
        sc.expect(create(kube, namespace, manifest("during-freeze")), None)
        wait_until("its Job", lambda: ledger.jobs_of(sc.expectations[0].uid), 15)
        leader.resume()
        frozen_for = time.monotonic() - paused
        sc.expect(create(kube, namespace, manifest("after-wake")), None)
        assert leader.proc is not None
        wait_until("the woken leader to exit", lambda: leader.proc.poll() is not None, 30)
        wait_until("the second Job", lambda: ledger.jobs_of(sc.expectations[1].uid), 15)
        assert "stepping down: Lease taken by replica-" in leader.log_tail(200)
        assert sc.duplicates() == []
        # Every Event about the two ClipJobs comes from the new leader.
        events = kube.core.list_namespaced_event(namespace, _request_timeout=5).items
        ours = [e for e in events if e.reporting_component == "mememaker.io/clip-operator"]
        assert ours and {e.reporting_instance for e in ours} == {standby.env["POD_NAME"]}
    finally:
        ledger.stop()
    print(f"\nleader frozen for {frozen_for:.1f} s, stepped down on waking")
