"""Gathering what a decision needs: presigned URLs, the Job by name, S3 results.

A mixin of Controller; each method fills `Facts` for the next call to `decide`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from .admission import Admission
from .builders import ClipJobRef, UploadTarget, object_key, resolve_bucket
from .cache import Cache, job_finished, owner_uid
from .config import OperatorConfig
from .kube import Kube
from .lifecycle import end_of_life
from .models import ClipJobSpec, parse_spec
from .plan import Facts, Need, Settings
from .presign import Presigner, StorageProblem
from .s3ops import S3Ops


class FactFinder:
    kube: Kube
    config: OperatorConfig
    presigner: Presigner
    cache: Cache
    admission: Admission
    s3ops: S3Ops
    settings: Settings

    # -- facts ----------------------------------------------------------------------------

    def _spec_and_place(self, cj: dict[str, Any], ref: ClipJobRef) -> tuple[ClipJobSpec, str, str]:
        spec = parse_spec(cj.get("spec"))
        output = (cj.get("status") or {}).get("output") or {}
        bucket = output.get("bucket") or resolve_bucket(spec, self.config) or ""
        return spec, bucket, output.get("key") or object_key(ref, spec)

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
            else:
                self.s3ops.start(ref.uid, kind, self.presigner.delete(ref, spec, bucket, key))
            return False
        value, error = done
        if need == Need.RECOVER:
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
