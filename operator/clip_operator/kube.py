"""Thin Kubernetes API layer: the only module that talks to the API server directly.

Requests go through the official client's connection pool and authentication, but
bodies are plain JSON both ways: building and parsing the client's model objects cost
more CPU than everything else the operator does (measured in bench/operator). The
client is synchronous, so every call runs in a worker thread and the kopf event loop
never blocks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .models import GROUP, PLURAL, VERSION

FIELD_MANAGER = "clip-operator"
MERGE_PATCH = "application/merge-patch+json"


class Kube:
    """API calls the operator makes, each a coroutine returning plain dicts."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self._event_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="events")

    @classmethod
    def connect(cls) -> Kube:
        """In-cluster credentials when running in a Pod, else the kubeconfig (KUBECONFIG)."""
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        cfg = client.Configuration.get_default_copy()
        cfg.connection_pool_maxsize = 64  # one connection per API thread, and then some
        api = client.ApiClient(cfg)
        api.user_agent = f"{FIELD_MANAGER}/kubernetes-python"
        return cls(api)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> dict[str, Any]:
        """One synchronous API request with a JSON body; raises ApiException on non-2xx."""
        resp = self.api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=timeout,
        )
        data = resp.data
        return dict(json.loads(data)) if data else {}

    async def _call(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.request, *args, **kwargs)

    async def create_job(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
        return await self._call(
            "POST",
            f"/apis/batch/v1/namespaces/{namespace}/jobs",
            manifest,
            [("fieldManager", FIELD_MANAGER)],
        )

    async def read_job(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._call("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")

    async def delete_job(self, namespace: str, name: str, propagation: str = "Foreground") -> None:
        """Delete a Job; Foreground keeps it (with its Pods) until the Pods are gone."""
        try:
            await self._call(
                "DELETE",
                f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
                {"propagationPolicy": propagation},
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def delete_clipjob(self, namespace: str, name: str, uid: str) -> None:
        """Delete a ClipJob (background propagation); the uid precondition spares a
        same-named successor created meanwhile."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
        body = {"propagationPolicy": "Background", "preconditions": {"uid": uid}}
        try:
            await self._call("DELETE", path, body=body)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    async def kueue_reason(self, namespace: str, job: dict[str, Any]) -> str:
        """Why Kueue has not admitted a suspended Job: its Workload's QuotaReserved or
        Admitted condition message ("" when there is none, no Kueue, or no right to look)."""
        uid = (job.get("metadata") or {}).get("uid")
        if not uid:
            return ""
        path = f"/apis/kueue.x-k8s.io/v1beta1/namespaces/{namespace}/workloads"
        try:
            found = await self._call(
                "GET", path, query=[("labelSelector", f"kueue.x-k8s.io/job-uid={uid}")]
            )
        except ApiException:
            return ""
        for workload in found.get("items") or []:
            conds = {
                c.get("type"): c for c in (workload.get("status") or {}).get("conditions") or []
            }
            for kind in ("QuotaReserved", "Admitted"):
                cond = conds.get(kind)
                if cond and cond.get("status") == "False" and cond.get("message"):
                    return str(cond["message"])[:1024]
        return ""

    def list_jobs_sync(
        self,
        label_selector: str,
        namespaces: list[str],
        slim: Callable[[dict[str, Any]], dict[str, Any]] = lambda job: job,
    ) -> list[dict[str, Any]]:
        """All Jobs we manage (startup seeding and resyncs), in pages."""
        paths = [f"/apis/batch/v1/namespaces/{ns}/jobs" for ns in namespaces] or [
            "/apis/batch/v1/jobs"
        ]
        return self.list_paged_sync(paths, label_selector, slim)

    def list_clipjobs_sync(
        self,
        namespaces: list[str],
        slim: Callable[[dict[str, Any]], dict[str, Any]] = lambda obj: obj,
    ) -> list[dict[str, Any]]:
        """All ClipJobs in scope (resyncs), in pages."""
        base = f"/apis/{GROUP}/{VERSION}"
        paths = [f"{base}/namespaces/{ns}/{PLURAL}" for ns in namespaces] or [f"{base}/{PLURAL}"]
        return self.list_paged_sync(paths, "", slim)

    def list_paged_sync(
        self,
        paths: list[str],
        label_selector: str,
        slim: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for path in paths:
            token = ""
            while True:  # in pages, slimmed as they come: thousands of Jobs are large
                query = [("limit", "200")]
                if label_selector:
                    query.append(("labelSelector", label_selector))
                if token:
                    query.append(("continue", token))
                page = self.request("GET", path, query=query)
                items += [slim(item) for item in page.get("items") or []]
                token = (page.get("metadata") or {}).get("continue") or ""
                if not token:
                    break
        return items

    async def job_has_events(self, namespace: str, name: str) -> bool:
        """Whether a Job of this name left Events (the Job controller's): it existed."""
        found = await self._call(
            "GET",
            f"/api/v1/namespaces/{namespace}/events",
            query=[
                ("fieldSelector", f"involvedObject.kind=Job,involvedObject.name={name}"),
                ("limit", "1"),
            ],
        )
        return bool(found.get("items"))

    async def list_job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        found = await self._call(
            "GET",
            f"/api/v1/namespaces/{namespace}/pods",
            query=[("labelSelector", f"batch.kubernetes.io/job-name={quote(job_name)}")],
        )
        return list(found.get("items") or [])

    async def _merge_patch_clipjob(self, path: str, body: dict[str, Any]) -> str | None:
        """Merge-patch a ClipJob (or its status); the new resourceVersion, None if it is gone."""
        try:
            obj = await self._call(
                "PATCH", path, body, [("fieldManager", FIELD_MANAGER)], MERGE_PATCH
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return str((obj.get("metadata") or {}).get("resourceVersion") or "") or None

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> str | None:
        """Merge-patch status; returns the new resourceVersion (None if the ClipJob is gone)."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"
        return await self._merge_patch_clipjob(path, {"status": status})

    async def patch_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str | None
    ) -> str | None:
        """Replace metadata.finalizers; resourceVersion makes it a compare-and-swap."""
        meta: dict[str, Any] = {"finalizers": finalizers}
        if resource_version:
            meta["resourceVersion"] = resource_version
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
        return await self._merge_patch_clipjob(path, {"metadata": meta})

    async def update_finalizers(
        self, namespace: str, name: str, add: str | None = None, remove: str | None = None
    ) -> str | None:
        """Add or remove one finalizer with a fresh read and compare-and-swap (retry on 409)."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
        for attempt in range(5):
            try:
                obj = await self._call("GET", path)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            meta = obj.get("metadata") or {}
            current = list(meta.get("finalizers") or [])
            wanted = [f for f in current if f != remove]
            if add and add not in wanted:
                wanted.append(add)
            if wanted == current:
                return str(meta.get("resourceVersion") or "") or None
            try:
                return await self.patch_finalizers(
                    namespace, name, wanted, str(meta.get("resourceVersion") or "")
                )
            except ApiException as exc:
                if exc.status != 409 or attempt == 4:
                    raise
        return None

    async def ensure_network_policy(
        self, namespace: str, name: str, spec: dict[str, Any], labels: dict[str, str]
    ) -> None:
        """Create the NetworkPolicy, or patch its spec when it differs from ours."""
        path = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
        try:
            current = await self._call("GET", f"{path}/{name}")
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": spec,
            }
            try:
                await self._call("POST", path, body, [("fieldManager", FIELD_MANAGER)])
            except ApiException as exc2:
                if exc2.status != 409:
                    raise
            return

        def essential(value: dict[str, Any]) -> dict[str, Any]:
            # The API server drops empty lists (`ingress: []`) when it stores a policy.
            return {k: v for k, v in value.items() if v not in ([], {}, None)}

        if essential(current.get("spec") or {}) != essential(spec):
            await self._call(
                "PATCH",
                f"{path}/{name}",
                {"spec": spec},
                [("fieldManager", FIELD_MANAGER)],
                MERGE_PATCH,
            )

    async def put_secret(self, namespace: str, secret: dict[str, Any]) -> None:
        """Create the Secret, or replace it when it exists (create, then update: never get)."""
        path = f"/api/v1/namespaces/{namespace}/secrets"
        try:
            await self._call("POST", path, secret, [("fieldManager", FIELD_MANAGER)])
        except ApiException as exc:
            if exc.status != 409:
                raise
            name = secret["metadata"]["name"]
            await self._call("PUT", f"{path}/{name}", secret, [("fieldManager", FIELD_MANAGER)])

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        """Decoded data of a Secret (get only: the operator never lists Secrets)."""
        import base64

        secret = await self._call("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        data = secret.get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    async def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        """Events use their own few threads: they must never delay Jobs or status."""
        loop = asyncio.get_running_loop()
        path = f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
        await loop.run_in_executor(self._event_pool, self.request, "POST", path, event)

    async def patch_event(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Bump a repeated Event's series instead of creating another."""
        loop = asyncio.get_running_loop()
        path = f"/apis/events.k8s.io/v1/namespaces/{namespace}/events/{name}"

        def call() -> dict[str, Any]:
            return self.request("PATCH", path, patch, content_type=MERGE_PATCH)

        await loop.run_in_executor(self._event_pool, call)
