"""Gathering what a decision needs: presigned URLs, the Job by name, S3 results.

A mixin of Controller; each method fills `Facts` for the next call to `decide`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from .admission import Admission
from .builders import (
    ClipJobRef,
    UploadTarget,
    object_key,
    ref_of,
    resolve_bucket,
    thumbnail_key,
)
from .cache import Cache, job_finished, owner_uid
from .config import OperatorConfig
from .dedupe import TwinIndex, content_digest, content_key, older
from .kube import Kube
from .lifecycle import end_of_life
from .models import ClipJobSpec, parse_spec
from .plan import Facts, Need, Settings
from .presign import Presigner, StorageProblem
from .s3ops import S3Ops

log = logging.getLogger("clip_operator")


class FactFinder:
    kube: Kube
    config: OperatorConfig
    presigner: Presigner
    cache: Cache
    admission: Admission
    s3ops: S3Ops
    settings: Settings
    twins: TwinIndex

    # -- facts ----------------------------------------------------------------------------

    def _spec_and_place(self, cj: dict[str, Any], ref: ClipJobRef) -> tuple[ClipJobSpec, str, str]:
        spec = parse_spec(cj.get("spec"))
        output = (cj.get("status") or {}).get("output") or {}
        bucket = output.get("bucket") or resolve_bucket(spec, self.config) or ""
        return spec, bucket, output.get("key") or self._key(cj, ref, spec, bucket)

    def _content_addressed(self, cj: dict[str, Any], spec: ClipJobSpec) -> bool:
        """Deduplicated, unless a Job made before dedupe was on (status has a jobName but no
        cache verdict) uploads to the per-ClipJob key."""
        if self.settings.dedupe == "Off" or not spec.dedupe:
            return False
        status = cj.get("status") or {}
        return bool(status.get("cache") or not status.get("jobName"))

    def _digest(self, ref: ClipJobRef, spec: ClipJobSpec, bucket: str) -> str:
        endpoint = (spec.storage.endpoint if spec.storage else None) or self.config.s3_endpoint
        return content_digest(spec, ref.namespace, self.settings.dedupe, bucket, endpoint)

    def _key(self, cj: dict[str, Any], ref: ClipJobRef, spec: ClipJobSpec, bucket: str) -> str:
        if self._content_addressed(cj, spec):
            digest = self._digest(ref, spec, bucket)
            return content_key(spec, ref.namespace, self.settings.dedupe, digest)
        return object_key(ref, spec)

    def index_twin(self, cj: dict[str, Any]) -> set[str]:
        """Index an unfinished ClipJob by its content digest (once per process); a finished
        or deleted one leaves the index. Returns the ClipJobs that waited for it."""
        uid = cj["metadata"]["uid"]
        if self.settings.dedupe == "Off":
            return set()
        status = cj.get("status") or {}
        finished = status.get("phase") in ("Succeeded", "Failed")
        if finished or cj["metadata"].get("deletionTimestamp"):
            return self.twins.discard(uid)
        if uid in self.twins.digest_of:
            return set()
        try:
            spec = parse_spec(cj.get("spec"))
        except Exception:
            return set()  # an invalid spec fails on its own
        if not self._content_addressed(cj, spec):
            return set()
        bucket = resolve_bucket(spec, self.config) or ""
        self.twins.add(uid, self._digest(ref_of(cj), spec, bucket))
        return set()

    def _twin(self, cj: dict[str, Any]) -> str:
        """The name of the oldest identical unfinished ClipJob older than `cj` ("" = none)."""
        best: dict[str, Any] | None = None
        for uid in self.twins.twins(cj["metadata"]["uid"]):
            other = self.cache.clipjobs.get(uid)
            if other is None or not older(other, cj):
                continue
            if best is None or older(other, best):
                best = other
        if best is None:
            return ""
        meta = best["metadata"]
        same_ns = meta["namespace"] == cj["metadata"]["namespace"]
        return str(meta["name"]) if same_ns else "in another namespace"

    def _object_users(self, cj: dict[str, Any], ref: ClipJobRef) -> list[str]:
        """Other ClipJobs whose clip is the object this one would delete."""
        _, bucket, key = self._spec_and_place(cj, ref)
        users = []
        twins = self.twins.twins(ref.uid)
        for uid, other in self.cache.clipjobs.items():
            if uid == ref.uid or other["metadata"].get("deletionTimestamp"):
                continue
            output = (other.get("status") or {}).get("output") or {}
            if uid in twins or (output.get("key") == key and output.get("bucket") == bucket):
                meta = other["metadata"]
                users.append(f"{meta['namespace']}/{meta['name']}")
        return users

    async def _prepare_upload(
        self, cj: dict[str, Any], ref: ClipJobRef, facts: Facts
    ) -> UploadTarget | None:
        spec, bucket, key = self._spec_and_place(cj, ref)
        deadline = spec.deadline_seconds or self.config.default_deadline_seconds
        try:
            target = await self.presigner.presign_upload(ref, spec, bucket, key, deadline)
        except StorageProblem as exc:
            facts.upload_problem = (exc.reason, exc.message)
            return None
        facts.upload_ready = True
        return target

    async def _presign_url(self, cj: dict[str, Any], ref: ClipJobRef, facts: Facts) -> None:
        spec, bucket, key = self._spec_and_place(cj, ref)
        try:
            # Never valid past the ClipJob's end of life (ttlSecondsAfterFinished).
            not_after = end_of_life(cj, self.settings, datetime.now(UTC))
            facts.url = await self.presigner.presign_get(ref, spec, bucket, key, not_after)
            thumb_key = thumbnail_key(key, spec)
            if thumb_key:  # spec.thumbnail: its own download URL, with the clip's life
                name = f"{ref.name}.{thumb_key.rsplit('.', 1)[1]}"
                signed = await self.presigner.presign_get(
                    ref, spec, bucket, thumb_key, not_after, name
                )
                facts.thumbnail_url = signed[0]
        except StorageProblem as exc:
            facts.url_error = exc.message
        except Exception as exc:
            facts.url_error = str(exc)

    async def _lookup_job(
        self, cj: dict[str, Any], ref: ClipJobRef, facts: Facts
    ) -> dict[str, Any] | None:
        name = (cj.get("status") or {}).get("jobName") or ""
        try:
            found = await self.kube.read_job(ref.namespace, name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            facts.job_absent = True
            return None
        if owner_uid(found) != ref.uid:
            facts.job_absent = True
            return None
        facts.job_absent = False
        self.cache.put_job(ref.uid, found)
        self.admission.running(ref.uid, not job_finished(found), ref.namespace)
        return self.cache.jobs[ref.uid]

    def _s3(self, need: Need, cj: dict[str, Any], ref: ClipJobRef, facts: Facts) -> bool:
        """Fill facts from a finished background S3 operation; start one if none. True = done."""
        spec, bucket, key = self._spec_and_place(cj, ref)
        kind = need.value
        done = self.s3ops.take(ref.uid, kind)
        if done is None:
            if need == Need.RECOVER:
                self.s3ops.start(ref.uid, kind, self.presigner.read_result(ref, spec, bucket, key))
            elif need == Need.PROGRESS:
                read = self.presigner.read_progress(ref, spec, bucket, key)
                self.s3ops.start(ref.uid, kind, read)
            else:
                self.s3ops.start(ref.uid, kind, self.presigner.delete(ref, spec, bucket, key))
            return False
        value, error = done
        if need == Need.PROGRESS:  # best effort: an unreadable object shows no progress
            facts.progress = dict(value or {}) if error is None else {}
            return True
        if need == Need.RECOVER:
            if error is not None and not (cj.get("status") or {}).get("jobName"):
                # A dedupe lookup: a storage problem is the user's to fix (shown as it
                # would be for the upload); S3 trouble only costs the reuse, not the clip.
                if isinstance(error, StorageProblem):
                    facts.upload_problem = (error.reason, error.message)
                else:
                    log.warning("dedupe lookup of %s failed, making the clip: %s", key, error)
                facts.recovered = {}
                return True
            if error is not None:
                raise error  # transient: back off and read again
            facts.recovered = dict(value or {})
        elif error is None:
            facts.deleted_objects = True
        elif isinstance(error, StorageProblem):
            facts.delete_error = (error.message, False)
        else:
            facts.delete_error = (str(error), bool(getattr(error, "retryable", True)))
        return True
