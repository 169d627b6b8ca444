"""What a fault scenario counts: every Job ever created, ClipJobs lost, time to recover.

`JobLedger` watches Jobs in the scenario's namespaces for the whole scenario (list, then
watch from the list's resourceVersion; after an error or an API server restart it lists
and watches again), and records each Job's uid under its owner ClipJob's uid. A Job that
lived for a moment and was garbage-collected is still counted.

`Scenario` holds what the user expects of each ClipJob (a phase, optionally a reason, or
gone), waits for it with a deadline and produces one row of the session's report table.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.clipjobs import GROUP, PLURAL, VERSION

GONE = "gone"


class JobLedger:
    """Distinct Job uids per owner ClipJob uid, in some namespaces, for as long as it runs."""

    def __init__(self, kubeconfig: str, namespaces: list[str]) -> None:
        from kubernetes import client, config

        self.api = config.new_client_from_config(config_file=kubeconfig)
        self.batch = client.BatchV1Api(self.api)
        self.namespaces = namespaces
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.by_owner: dict[str, set[str]] = {}
        self.names: dict[str, str] = {}  # job uid -> namespace/name
        self.errors = 0
        self.threads = [
            threading.Thread(target=self._follow, args=(ns,), daemon=True) for ns in namespaces
        ]

    def start(self) -> JobLedger:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop following (a watch in progress ends by itself within its 5 s timeout)."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=0.5)

    def _see(self, job: Any) -> None:
        owners = job.metadata.owner_references or []
        owner = next((o.uid for o in owners if o.controller), None)
        owner = owner or (job.metadata.labels or {}).get("mememaker.io/clipjob-uid") or "?"
        with self.lock:
            self.by_owner.setdefault(owner, set()).add(job.metadata.uid)
            self.names[job.metadata.uid] = f"{job.metadata.namespace}/{job.metadata.name}"

    def _follow(self, namespace: str) -> None:
        from kubernetes import watch

        while not self.stopping.is_set():
            try:
                listed = self.batch.list_namespaced_job(namespace, _request_timeout=10)
                for job in listed.items:
                    self._see(job)
                stream = watch.Watch()
                for event in stream.stream(
                    self.batch.list_namespaced_job,
                    namespace,
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=5,
                    _request_timeout=15,
                ):
                    if event["type"] == "ERROR":
                        break
                    self._see(event["object"])
                    if self.stopping.is_set():
                        stream.stop()
            except Exception:
                self.errors += 1
                self.stopping.wait(0.2)

    def jobs_of(self, clipjob_uid: str) -> set[str]:
        with self.lock:
            return set(self.by_owner.get(clipjob_uid, set()))


@dataclass
class Expectation:
    namespace: str
    name: str
    uid: str
    phase: str | None  # a phase, GONE, or None for any phase
    reason: str | None = None
    jobs_allowed: int = 1
    message: str | None = None  # text status.message must contain


@dataclass
class Scenario:
    """One fault scenario: expectations, the fault's end, and the report row it yields."""

    name: str
    kube: Any
    ledger: JobLedger
    expectations: list[Expectation] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    fault_cleared_at: float | None = None
    recovered_at: float | None = None
    lost: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    met_at: dict[str, float] = field(default_factory=dict)

    def expect(
        self,
        clipjob: dict[str, Any],
        phase: str | None,
        reason: str | None = None,
        jobs_allowed: int = 1,
        message: str | None = None,
    ) -> None:
        meta = clipjob["metadata"]
        self.expectations.append(
            Expectation(
                meta["namespace"], meta["name"], meta["uid"], phase, reason, jobs_allowed, message
            )
        )

    def fault_cleared(self) -> None:
        """The fault is over (component back, S3 back, operator restarted): start the clock."""
        self.fault_cleared_at = time.monotonic()

    def _state(self, exp: Expectation) -> tuple[bool, str]:
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self.kube.custom.get_namespaced_custom_object(
                GROUP, VERSION, exp.namespace, PLURAL, exp.name, _request_timeout=5
            )
        except ApiException as exc:
            if exc.status == 404:
                return exp.phase == GONE, GONE
            raise
        if obj["metadata"]["uid"] != exp.uid:
            return False, "replaced by another object"
        status = obj.get("status") or {}
        phase, reason = status.get("phase"), status.get("reason")
        ok = (
            exp.phase in (None, phase)
            and exp.reason in (None, reason)
            and (exp.message is None or exp.message in str(status.get("message")))
        )
        return ok, f"{phase}/{reason}: {str(status.get('message'))[:160]}"

    def wait(self, timeout: float, every: float = 0.3) -> list[str]:
        """Wait until every expectation holds; returns the ones that did not (lost)."""
        deadline = time.monotonic() + timeout
        pending = list(self.expectations)
        states: dict[str, str] = {}
        while pending and time.monotonic() < deadline:
            still = []
            for exp in pending:
                try:
                    ok, states[exp.name] = self._state(exp)
                except Exception as exc:  # the API may be restarting: try again
                    ok, states[exp.name] = False, f"unreadable: {type(exc).__name__}"
                if not ok:
                    still.append(exp)
                else:
                    self.met_at[exp.name] = time.monotonic()
            pending = still
            if pending:
                time.sleep(every)
        self.recovered_at = time.monotonic()
        if self.met_at and not pending:
            last = max(self.met_at, key=lambda n: self.met_at[n])
            since = self.fault_cleared_at or self.started
            self.notes.append(f"last to recover: {last} ({self.met_at[last] - since:.1f} s)")
        self.lost = [
            f"{e.namespace}/{e.name} wanted {e.phase or '*'}/{e.reason or '*'}"
            + (f" saying {e.message!r}" if e.message else "")
            + f", is {states.get(e.name)}"
            for e in pending
        ]
        return self.lost

    def duplicates(self) -> list[str]:
        """Jobs beyond what each ClipJob may have (1, or 0 for one that must never run)."""
        extra = []
        for exp in self.expectations:
            jobs = self.ledger.jobs_of(exp.uid)
            if len(jobs) > exp.jobs_allowed:
                names = sorted(self.ledger.names.get(j, j) for j in jobs)
                extra.append(f"{exp.namespace}/{exp.name}: {len(jobs)} Jobs {names}")
        return extra

    def duplicate_count(self) -> int:
        return sum(
            max(0, len(self.ledger.jobs_of(e.uid)) - e.jobs_allowed) for e in self.expectations
        )

    def recover_seconds(self) -> float | None:
        if self.recovered_at is None or self.lost:
            return None
        return self.recovered_at - (self.fault_cleared_at or self.started)

    def finish(self, timeout: float) -> None:
        """Wait for every expectation, then assert nothing lost and nothing duplicated."""
        lost = self.wait(timeout)
        dups = self.duplicates()
        assert not lost and not dups, (
            f"{self.name}: lost {lost}; duplicate Jobs {dups}\n{self.cluster_state()}"
        )

    def cluster_state(self) -> str:
        """ClipJobs, Jobs and Pods of the scenario's namespaces, for a failure message."""
        out = []
        for ns in self.ledger.namespaces:
            got = self.kube.run_kubectl(
                "get", "clipjobs,jobs,pods", "-n", ns, "-o", "wide", timeout=20
            )
            out.append(f"--- {ns}\n{got.stdout}{got.stderr}")
        return "\n".join(out)

    def row(self, outcome: str) -> dict[str, Any]:
        recover = self.recover_seconds()
        return {
            "scenario": self.name,
            "clipjobs": len(self.expectations),
            "lost": "?" if self.lost is None else len(self.lost),
            "duplicates": self.duplicate_count(),
            "recover": "-" if recover is None else f"{recover:.1f}",
            "outcome": outcome,
            "notes": "; ".join(self.notes),
        }


def wait_until(what: str, check: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    """Poll `check` (exceptions count as not yet: the API may be restarting)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:
            last = f"{type(exc).__name__}: {str(exc)[:200]}"
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def format_table(rows: list[dict[str, Any]]) -> str:
    head = "| scenario | ClipJobs | lost | duplicate Jobs | time to recover (s) | result | notes |"
    lines = [head, "| --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['clipjobs']} | {r['lost']} | {r['duplicates']} "
            f"| {r['recover']} | {r['outcome']} | {r['notes']} |"
        )
    return "\n".join(lines)
