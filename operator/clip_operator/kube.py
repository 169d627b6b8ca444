"""Thin Kubernetes API layer: the only module that talks to the API server directly.

The official client is synchronous; every call runs in a worker thread so the kopf
event loop never blocks.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .models import GROUP, PLURAL, VERSION


class Kube:
    """API calls the operator makes, each a coroutine."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api = api_client
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    @classmethod
    def connect(cls) -> Kube:
        """In-cluster credentials when running in a Pod, else the kubeconfig (KUBECONFIG)."""
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        return cls(client.ApiClient())

    async def create_job(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            obj = self.batch.create_namespaced_job(namespace, manifest)
            return dict(self.api.sanitize_for_serialization(obj))

        return await asyncio.to_thread(call)

    async def read_job(self, namespace: str, name: str) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            obj = self.batch.read_namespaced_job(name, namespace)
            return dict(self.api.sanitize_for_serialization(obj))

        return await asyncio.to_thread(call)

    async def delete_job(self, namespace: str, name: str) -> None:
        def call() -> None:
            try:
                self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
            except ApiException as exc:
                if exc.status != 404:
                    raise

        await asyncio.to_thread(call)

    def list_jobs_sync(self, label_selector: str, namespaces: list[str]) -> list[dict[str, Any]]:
        """All Jobs we manage (startup seeding, before the watches begin)."""
        items: list[Any] = []
        if namespaces:
            for ns in namespaces:
                items += self.batch.list_namespaced_job(ns, label_selector=label_selector).items
        else:
            items = self.batch.list_job_for_all_namespaces(label_selector=label_selector).items
        return [dict(self.api.sanitize_for_serialization(i)) for i in items]

    async def list_job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        def call() -> list[dict[str, Any]]:
            pods = self.core.list_namespaced_pod(
                namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}"
            )
            return [dict(self.api.sanitize_for_serialization(p)) for p in pods.items]

        return await asyncio.to_thread(call)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch status; a ClipJob deleted meanwhile is not an error."""

        def call() -> None:
            try:
                self.custom.api_client.call_api(
                    f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status",
                    "PATCH",
                    body={"status": status},
                    header_params={"Content-Type": "application/merge-patch+json"},
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise

        await asyncio.to_thread(call)

    async def patch_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str | None
    ) -> None:
        """Replace metadata.finalizers; resourceVersion makes it a compare-and-swap."""
        meta: dict[str, Any] = {"finalizers": finalizers}
        if resource_version:
            meta["resourceVersion"] = resource_version

        def call() -> None:
            try:
                self.custom.api_client.call_api(
                    f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}",
                    "PATCH",
                    body={"metadata": meta},
                    header_params={"Content-Type": "application/merge-patch+json"},
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise

        await asyncio.to_thread(call)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        """Decoded data of a Secret (get only: the operator never lists Secrets)."""
        import base64

        def call() -> dict[str, str]:
            secret = self.core.read_namespaced_secret(name, namespace)
            data = secret.data or {}
            return {k: base64.b64decode(v).decode() for k, v in data.items()}

        return await asyncio.to_thread(call)
