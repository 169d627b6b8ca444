"""The operator's view of the cluster: ClipJobs and our Jobs, fed by watches and resyncs.

Watch events only update this cache (and enqueue the ClipJob's key). A periodic resync
LISTs both kinds and makes the cache equal to the API: after a 410 Gone kopf re-lists
without DELETED events, so objects deleted in the gap would otherwise live on here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

_JOB_META = (
    "name",
    "namespace",
    "uid",
    "labels",
    "ownerReferences",
    "creationTimestamp",
    "resourceVersion",
)
_JOB_SPEC = ("ttlSecondsAfterFinished",)


def slim_job(job: dict[str, Any]) -> dict[str, Any]:
    """The parts of a Job the operator reads; the cache holds thousands of them."""
    meta = job.get("metadata") or {}
    slim_meta = {k: meta[k] for k in _JOB_META if k in meta}
    if meta.get("deletionTimestamp"):
        slim_meta["deletionTimestamp"] = meta["deletionTimestamp"]
    return {"metadata": slim_meta, "status": job.get("status") or {}}


def slim_clipjob(raw: dict[str, Any]) -> dict[str, Any]:
    """A ClipJob without managedFields (often half its size) for the cache."""
    meta = {k: v for k, v in (raw.get("metadata") or {}).items() if k != "managedFields"}
    return {**raw, "metadata": meta}


def owner_uid(job: dict[str, Any]) -> str | None:
    for ref in (job.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "ClipJob" and ref.get("controller"):
            return str(ref.get("uid"))
    return None


def job_finished(job: dict[str, Any]) -> bool:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return True
    return False


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


@dataclass
class Cache:
    clipjobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # by owner ClipJob uid
    clock: Callable[[], float] = time.monotonic
    # When each key last changed through a watch event or our own write: a resync LIST
    # taken before that must not overwrite or drop it.
    touched: dict[str, float] = field(default_factory=dict)

    # -- ClipJobs -------------------------------------------------------------------------

    def put_clipjob(self, raw: dict[str, Any]) -> bool:
        """Store a ClipJob from a watch event; False when it is older than what we have."""
        uid = raw["metadata"]["uid"]
        current = self.clipjobs.get(uid)
        if current is not None and 0 < _rv(raw) < _rv(current):
            return False  # an event from before our own write: stale
        self.clipjobs[uid] = slim_clipjob(raw)
        self.touched[uid] = self.clock()
        return True

    def drop_clipjob(self, uid: str) -> None:
        self.clipjobs.pop(uid, None)
        self.touched.pop(uid, None)

    def wrote_status(self, uid: str, status: dict[str, Any], rv: str | None) -> None:
        body = self.clipjobs.get(uid)
        if body is None:
            return
        body["status"] = status
        if rv:
            body["metadata"]["resourceVersion"] = rv
        self.touched[uid] = self.clock()

    # -- Jobs -----------------------------------------------------------------------------

    def put_job(self, owner: str, job: dict[str, Any]) -> None:
        """Keep the newest state of the owner's Job: a create call's answer can arrive after
        the watch already brought a later version (the Job controller's first sync)."""
        current = self.jobs.get(owner)
        uid = (job.get("metadata") or {}).get("uid")
        if (
            current is not None
            and current["metadata"].get("uid") == uid
            and _rv(current) > _rv(job)
        ):
            return
        self.jobs[owner] = slim_job(job)
        self.touched["job/" + owner] = self.clock()

    def drop_job(self, owner: str, job_uid: str | None = None) -> bool:
        current = self.jobs.get(owner)
        if current is None:
            return False
        if job_uid is not None and current["metadata"].get("uid") != job_uid:
            return False  # a DELETED event of an older Job of the same owner
        del self.jobs[owner]
        self.touched.pop("job/" + owner, None)
        return True

    # -- resync ---------------------------------------------------------------------------

    def resync(
        self, listed_at: float, clipjobs: Iterable[dict[str, Any]], jobs: Iterable[dict[str, Any]]
    ) -> tuple[set[str], set[str]]:
        """Make the cache equal to a LIST taken at `listed_at` (monotonic clock).

        Keys touched by a watch event after the LIST started keep their newer state.
        Returns (ClipJob uids that vanished, owner uids whose Job vanished).
        """
        seen: set[str] = set()
        for raw in clipjobs:
            uid = raw["metadata"]["uid"]
            seen.add(uid)
            if self.touched.get(uid, -1.0) < listed_at:
                current = self.clipjobs.get(uid)
                if current is None or _rv(raw) >= _rv(current):
                    self.clipjobs[uid] = slim_clipjob(raw)
        gone = {u for u in self.clipjobs if u not in seen and self.touched.get(u, -1.0) < listed_at}
        for uid in gone:
            self.drop_clipjob(uid)
        seen_jobs: set[str] = set()
        for job in jobs:
            owner = owner_uid(job)
            if owner is None:
                continue
            seen_jobs.add(owner)
            if self.touched.get("job/" + owner, -1.0) < listed_at:
                self.jobs[owner] = slim_job(job)
        lost = {
            o
            for o in self.jobs
            if o not in seen_jobs and self.touched.get("job/" + o, -1.0) < listed_at
        }
        for owner in lost:
            self.drop_job(owner)
        return gone, lost
