"""Which S3 credentials and endpoint to use for a ClipJob, and presign/delete with them.

Default storage uses the operator's own credentials (boto3's chain: env, IRSA, ...).
Tenant storage (`spec.storage.secretRef`) uses the keys in that Secret, read with a
single `get` (the operator's RBAC never lists or watches Secrets).
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from typing import Any

from .builders import ClipJobRef, download_filename
from .config import OperatorConfig
from .kube import Kube
from .models import ClipJobSpec
from .status import now_iso
from .storage import S3Settings, delete_object, make_client, presign_get


class Presigner:
    def __init__(self, kube: Kube, config: OperatorConfig) -> None:
        self.kube = kube
        self.config = config
        self._clients: dict[S3Settings, Any] = {}

    async def settings_for(self, ref: ClipJobRef, spec: ClipJobSpec, public: bool) -> S3Settings:
        storage = spec.storage
        endpoint = (storage.endpoint if storage else None) or self.config.s3_endpoint
        if public and not (storage and storage.endpoint) and self.config.s3_public_endpoint:
            endpoint = self.config.s3_public_endpoint
        region = (storage.region if storage else None) or self.config.s3_region
        if storage and storage.secret_ref:
            data = await self.kube.read_secret(ref.namespace, storage.secret_ref.name)
            return S3Settings(
                endpoint=endpoint,
                region=region,
                access_key=data.get("AWS_ACCESS_KEY_ID"),
                secret_key=data.get("AWS_SECRET_ACCESS_KEY"),
                session_token=data.get("AWS_SESSION_TOKEN"),
            )
        return S3Settings(
            endpoint=endpoint,
            region=region,
            access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
            session_token=os.environ.get("AWS_SESSION_TOKEN"),
        )

    def _client(self, settings: S3Settings) -> Any:
        client = self._clients.get(settings)
        if client is None:
            if len(self._clients) > 256:  # tenant keys rotate; keep the cache bounded
                self._clients.clear()
            client = make_client(settings, timeout_seconds=self.config.storage_timeout_seconds)
            self._clients[settings] = client
        return client

    async def presign(
        self, ref: ClipJobRef, spec: ClipJobSpec, bucket: str, key: str
    ) -> tuple[str, str]:
        """(url, expiresAt RFC 3339) for the clip, with the ClipJob's requested lifetime."""
        settings = await self.settings_for(ref, spec, public=True)
        expires = self.config.effective_url_expiry(spec.url_expires_seconds)
        filename = download_filename(ref, spec)

        def call() -> tuple[str, datetime]:
            return presign_get(self._client(settings), bucket, key, expires, filename)

        url, expires_at = await asyncio.to_thread(call)
        return url, now_iso(expires_at)

    async def delete(self, ref: ClipJobRef, spec: ClipJobSpec, bucket: str, key: str) -> None:
        settings = await self.settings_for(ref, spec, public=False)
        await asyncio.to_thread(lambda: delete_object(self._client(settings), bucket, key))
