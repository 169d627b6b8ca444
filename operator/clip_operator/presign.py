"""S3 on behalf of a ClipJob: which endpoint and keys, and the calls made with them.

The operator holds the keys; workers get presigned URLs only (the clip's PUT and its
result object's PUT). Default storage uses the operator's own credentials (boto3's chain:
env, IRSA, ...). Tenant storage (`spec.storage.secretRef`) uses the keys in that Secret,
read with a single `get` in the ClipJob's namespace. A tenant endpoint must be on the
operator's allow-list and resolve to an allowed address (endpoints.py).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException

from .builders import (
    THUMBNAIL_TYPES,
    ClipJobRef,
    UploadTarget,
    download_filename,
    progress_key,
    thumbnail_key,
)
from .config import OperatorConfig
from .endpoints import EndpointRefused, check_address, check_allowed
from .kube import Kube
from .models import CONTENT_TYPES, ClipJobSpec
from .status import now_iso
from .storage import (
    S3Settings,
    StorageError,
    content_disposition,
    credential_expiry,
    delete_object,
    make_client,
    presign_get,
    presign_put,
    read_json_object,
)

T = TypeVar("T")
RESULT_SUFFIX = ".result.json"
UPLOAD_MARGIN_SECONDS = 900  # the upload URL outlives the Job's deadline by this much


class StorageProblem(Exception):
    """A storage setting the user must fix (permanent): `reason` goes into status."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def result_key(key: str) -> str:
    return key + RESULT_SUFFIX


class Presigner:
    def __init__(self, kube: Kube, config: OperatorConfig) -> None:
        self.kube = kube
        self.config = config
        self._clients: dict[S3Settings, Any] = {}
        # Signing runs in threads; a burst's first ClipJobs would each build a client (a
        # third of a second of CPU apiece, bench/operator) without this lock.
        self._clients_lock = threading.Lock()
        self._checked: dict[str, float] = {}  # endpoint -> monotonic time its address passed
        # Network calls to S3 (reads, deletes) get their own threads, at most 2 at a time per
        # endpoint: an unreachable endpoint never starves the API calls or other tenants.
        self._io = ThreadPoolExecutor(max_workers=16, thread_name_prefix="s3")
        self._per_endpoint: dict[str | None, asyncio.Semaphore] = {}

    async def _network(self, settings: S3Settings, call: Callable[[], T]) -> T:
        sem = self._per_endpoint.setdefault(settings.endpoint, asyncio.Semaphore(2))
        async with sem:
            return await asyncio.get_running_loop().run_in_executor(self._io, call)

    async def settings_for(self, ref: ClipJobRef, spec: ClipJobSpec, public: bool) -> S3Settings:
        storage = spec.storage
        tenant_endpoint = storage.endpoint if storage else None
        endpoint = tenant_endpoint or self.config.s3_endpoint
        if tenant_endpoint:
            await self._check_endpoint(tenant_endpoint)
        elif public and self.config.s3_public_endpoint:
            endpoint = self.config.s3_public_endpoint
        region = (storage.region if storage else None) or self.config.s3_region
        if storage and storage.secret_ref:
            data = await self._tenant_keys(ref, storage.secret_ref.name)
            return self._settings(
                endpoint,
                region,
                data.get("AWS_ACCESS_KEY_ID"),
                data.get("AWS_SECRET_ACCESS_KEY"),
                data.get("AWS_SESSION_TOKEN"),
            )
        return self._settings(
            endpoint,
            region,
            os.environ.get("AWS_ACCESS_KEY_ID"),
            os.environ.get("AWS_SECRET_ACCESS_KEY"),
            os.environ.get("AWS_SESSION_TOKEN"),
        )

    @staticmethod
    def _settings(
        endpoint: str | None, region: str, key: str | None, secret: str | None, token: str | None
    ) -> S3Settings:
        try:
            return S3Settings(endpoint, region, key, secret, token)
        except StorageError as exc:
            raise StorageProblem("InvalidSpec", str(exc)) from None

    async def _check_endpoint(self, endpoint: str) -> None:
        try:
            check_allowed(endpoint, self.config.s3_allowed_endpoints, self.config.s3_endpoint)
            if time.monotonic() - self._checked.get(endpoint, -1e9) > 60:
                await check_address(endpoint, self.config.allow_private_networks)
                self._checked[endpoint] = time.monotonic()
        except EndpointRefused as exc:
            raise StorageProblem("InvalidSpec", str(exc)) from None

    async def _tenant_keys(self, ref: ClipJobRef, name: str) -> dict[str, str]:
        try:
            data = await self.kube.read_secret(ref.namespace, name)
        except ApiException as exc:
            if exc.status == 404:
                raise StorageProblem(
                    "SecretNotFound",
                    f"the Secret {name!r} named by spec.storage.secretRef does not exist in "
                    f"namespace {ref.namespace}; create it with AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY",
                ) from None
            if exc.status == 403:
                raise StorageProblem(
                    "SecretForbidden",
                    f"the operator may not read the Secret {name!r} in namespace "
                    f"{ref.namespace}; list the namespace in the Helm value "
                    "rbac.tenantSecretNamespaces",
                ) from None
            raise
        if not data.get("AWS_ACCESS_KEY_ID") or not data.get("AWS_SECRET_ACCESS_KEY"):
            raise StorageProblem(
                "InvalidSpec",
                f"the Secret {name!r} lacks AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY",
            )
        return data

    def _client(self, settings: S3Settings) -> Any:
        client = self._clients.get(settings)
        if client is not None:
            return client
        with self._clients_lock:
            client = self._clients.get(settings)
            if client is None:
                if len(self._clients) > 256:  # tenant keys rotate; keep the cache bounded
                    self._clients.clear()
                timeout = self.config.storage_timeout_seconds
                client = make_client(settings, timeout_seconds=timeout)
                self._clients[settings] = client
        return client

    def _expiry(self, client: Any, seconds: int, now: datetime) -> datetime:
        """Signing time + lifetime, cut short by the credentials' own expiry."""
        expires = now + timedelta(seconds=seconds)
        creds_end = credential_expiry(client)
        return min(expires, creds_end) if creds_end else expires

    async def presign_upload(
        self, ref: ClipJobRef, spec: ClipJobSpec, bucket: str, key: str, deadline: int
    ) -> UploadTarget:
        settings = await self.settings_for(ref, spec, public=False)
        headers = {
            "Content-Type": CONTENT_TYPES[spec.output.format],
            "Content-Disposition": content_disposition(download_filename(ref, spec)),
        }
        lifetime = deadline + UPLOAD_MARGIN_SECONDS

        thumb_key = thumbnail_key(key, spec)
        floor = self.config.progress_min_clip_seconds
        reports = 0 < floor <= spec.duration_seconds

        def sign() -> UploadTarget:
            client = self._client(settings)
            json_type = {"Content-Type": "application/json"}
            progress = None  # signed only for a clip long enough to report progress
            if reports:
                progress = presign_put(client, bucket, progress_key(key), lifetime, json_type)
            thumb_url = None
            if thumb_key and spec.thumbnail:
                thumb_type = {"Content-Type": THUMBNAIL_TYPES[spec.thumbnail.format]}
                thumb_url = presign_put(client, bucket, thumb_key, lifetime, thumb_type)
            return UploadTarget(
                url=presign_put(client, bucket, key, lifetime, headers),
                headers=headers,
                result_url=presign_put(
                    client, bucket, result_key(key), lifetime, {"Content-Type": "application/json"}
                ),
                key=key,
                thumbnail_url=thumb_url,
                progress_url=progress,
            )

        try:
            return await asyncio.to_thread(sign)
        except StorageError as exc:
            raise StorageProblem("StorageAuthFailed", str(exc)) from None

    async def presign_get(
        self,
        ref: ClipJobRef,
        spec: ClipJobSpec,
        bucket: str,
        key: str,
        not_after: datetime | None = None,
        filename: str | None = None,
    ) -> tuple[str, str, str]:
        """(url, expiresAt, issuedAt): expiry is the requested lifetime, the keys' end or
        `not_after` (the ClipJob's end of life), whichever comes first."""
        settings = await self.settings_for(ref, spec, public=True)
        lifetime = self.config.effective_url_expiry(spec.url_expires_seconds)
        filename = filename or download_filename(ref, spec)

        def sign() -> tuple[str, str, str]:
            client = self._client(settings)
            issued = datetime.now(UTC).replace(microsecond=0)
            expires = self._expiry(client, lifetime, issued)
            if not_after is not None and not_after < expires:
                expires = max(issued + timedelta(seconds=1), not_after.replace(microsecond=0))
            seconds = max(1, int((expires - issued).total_seconds()))
            url, _ = presign_get(client, bucket, key, seconds, filename)
            return url, now_iso(expires), now_iso(issued)

        return await asyncio.to_thread(sign)

    async def read_progress(
        self, ref: ClipJobRef, spec: ClipJobSpec, bucket: str, key: str
    ) -> dict[str, Any]:
        """The worker's progress object of a long clip ({} when it wrote none yet)."""
        settings = await self.settings_for(ref, spec, public=False)

        def read() -> Any:
            return read_json_object(self._client(settings), bucket, progress_key(key), 4096)

        found = await self._network(settings, read)
        return found if isinstance(found, dict) else {}

    async def read_result(
        self, ref: ClipJobRef, spec: ClipJobSpec, bucket: str, key: str
    ) -> dict[str, Any]:
        """The worker's result object ({} when it never wrote one)."""
        settings = await self.settings_for(ref, spec, public=False)

        def read() -> Any:
            return read_json_object(self._client(settings), bucket, result_key(key))

        found = await self._network(settings, read)
        if not isinstance(found, dict) or found.get("key") not in (None, key):
            return {}
        return found

    async def delete(self, ref: ClipJobRef, spec: ClipJobSpec, bucket: str, key: str) -> None:
        settings = await self.settings_for(ref, spec, public=False)

        def remove() -> None:
            client = self._client(settings)
            delete_object(client, bucket, key)
            delete_object(client, bucket, result_key(key))
            if 0 < self.config.progress_min_clip_seconds <= spec.duration_seconds:
                delete_object(client, bucket, progress_key(key))
            thumb_key = thumbnail_key(key, spec)
            if thumb_key:
                delete_object(client, bucket, thumb_key)

        await self._network(settings, remove)
