"""The control plane fails under the operator: API server killed, etcd restarted, and a
watch that must re-list (410 Gone) after deletions it never saw."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections import Counter
from typing import Any

import pytest

from tests.faults.ledger import GONE, wait_until
from tests.faults.nodes import SimNode
from tests.faults.steps import (
    delete_clipjob,
    jobs_of,
    new_clipjob,
    status_of,
    upload_like_worker,
)

pytestmark = pytest.mark.faults

TERMINAL = ("Succeeded", "Failed")


def phases(kube: Any, namespace: str, names: list[str]) -> Counter[str]:
    return Counter(str(status_of(kube, namespace, n).get("phase")) for n in names)


def mid_flight(kube: Any, namespace: str, names: list[str]) -> Counter[str] | None:
    """Phases once some ClipJobs are done and others are running or queued."""
    now = phases(kube, namespace, names)
    done = now["Succeeded"] + now["Failed"]
    return now if done >= 2 and done <= len(names) - 3 and now["Running"] >= 1 else None


def restart_mid_flight(
    kube: Any,
    namespace: str,
    fault_operator: Any,
    scenario: Any,
    control_plane: Any,
    s3_server: Any,
    title: str,
    component: str,
    kill: bool,
) -> None:
    sc = scenario(title, [namespace])
    s3 = s3_server.client()
    node = SimNode(
        kube, [namespace], run_seconds=1.5, outcome=lambda pod: (0, upload_like_worker(pod, s3))
    )
    node.start()
    op = fault_operator([namespace], in_flight_limit=3)
    try:
        names = [f"m{i}" for i in range(8)]
        for name in names:
            sc.expect(new_clipjob(kube, namespace, name), "Succeeded")
        seen = wait_until("mid-flight phases", lambda: mid_flight(kube, namespace, names), 60)
        took = control_plane.restart(component, kill=kill)
        sc.fault_cleared()
        sc.notes.append(f"at the fault: {dict(seen)}; {component} back in {took:.1f} s")
        sc.finish(timeout=120)
        assert op.proc.poll() is None, f"the operator exited:\n{op.log_tail()}"
    finally:
        node.stop()


def test_apiserver_killed_mid_flight(
    kube: Any,
    namespace: str,
    fault_operator: Any,
    scenario: Any,
    control_plane: Any,
    s3_server: Any,
) -> None:
    restart_mid_flight(
        kube,
        namespace,
        fault_operator,
        scenario,
        control_plane,
        s3_server,
        "kube-apiserver SIGKILL, restart mid-flight",
        "kube-apiserver",
        kill=True,
    )


def test_etcd_restarted_mid_flight(
    kube: Any,
    namespace: str,
    fault_operator: Any,
    scenario: Any,
    control_plane: Any,
    s3_server: Any,
) -> None:
    restart_mid_flight(
        kube,
        namespace,
        fault_operator,
        scenario,
        control_plane,
        s3_server,
        "etcd restart mid-flight",
        "etcd",
        kill=False,
    )


def compact_etcd(control_plane: Any) -> int:
    """Compact etcd's history at its current revision (no watch can resume before it)."""
    args = control_plane.cmdline("kube-apiserver").split()
    server = args[args.index("--etcd-servers") + 1].split(",")[0]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(server + path, data=json.dumps(body).encode(), method="POST")
        with opener.open(req, timeout=10) as resp:
            return dict(json.loads(resp.read()))

    key = base64.b64encode(b"/registry/").decode()
    revision = int(post("/v3/kv/range", {"key": key, "limit": 1})["header"]["revision"])
    post("/v3/kv/compaction", {"revision": revision, "physical": True})
    return revision


def test_forced_relist_with_deletions_in_the_gap(
    kube: Any,
    namespace: str,
    fault_operator: Any,
    scenario: Any,
    control_plane: Any,
    s3_server: Any,
) -> None:
    sc = scenario("forced watch re-list, deletions in the gap", [namespace])
    s3 = s3_server.client()
    node = SimNode(kube, [namespace], outcome=lambda pod: (0, upload_like_worker(pod, s3)))
    node.hold.add("running")
    node.start()
    op = fault_operator([namespace], in_flight_limit=1, resync_seconds=3)
    try:
        running = new_clipjob(kube, namespace, "running")
        wait_until(
            "the first ClipJob Running",
            lambda: status_of(kube, namespace, "running").get("phase") == "Running",
            timeout=30,
        )
        doomed = new_clipjob(kube, namespace, "doomed")
        wait_until(
            "a later second",
            lambda: time.time() >= _stamp(doomed) + 1.05,
            timeout=5,
            every=0.05,
        )
        waiting = new_clipjob(kube, namespace, "waiting")
        for name in ("doomed", "waiting"):
            wait_until(
                f"{name} Queued",
                lambda n=name: status_of(kube, namespace, n).get("phase") == "Queued",
                timeout=30,
            )
        job = jobs_of(kube, namespace, running["metadata"]["uid"])[0]
        # The gap: the operator sleeps while the API server restarts (its watch cache starts
        # afresh) and both deletions happen; etcd forgets the history too. On waking, its
        # watches resume from a resourceVersion that is gone: 410, re-list, no DELETED events.
        op.pause()
        control_plane.restart("kube-apiserver")
        delete_clipjob(kube, namespace, "doomed")
        kube.batch.delete_namespaced_job(
            job.metadata.name, namespace, propagation_policy="Background"
        )
        wait_until(
            "the Job deleted",
            lambda: (
                not [
                    j
                    for j in jobs_of(kube, namespace, running["metadata"]["uid"])
                    if not j.metadata.deletion_timestamp
                ]
            ),
            timeout=30,
        )
        compact_etcd(control_plane)
        op.resume()
        sc.fault_cleared()
        resumed = time.monotonic()
        sc.expect(doomed, GONE, jobs_allowed=0)
        sc.expect(running, "Failed", reason="JobLost")
        sc.expect(waiting, "Succeeded")
        wait_until(
            "the freed slot admits the waiting ClipJob",
            lambda: jobs_of(kube, namespace, waiting["metadata"]["uid"]),
            timeout=3 + 12,
        )
        sc.notes.append(f"waiting ClipJob admitted {time.monotonic() - resumed:.1f} s after resume")
        sc.finish(timeout=60)
    finally:
        node.stop()


def _stamp(obj: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(obj["metadata"]["creationTimestamp"]).timestamp()
