"""Thin Kubernetes API layer: the only module that talks to the API server directly.

The official client loads the credentials (kubeconfig or in-cluster, with its token
refresh); requests go out on aiohttp in the event loop, with plain JSON bodies both ways
(orjson). Building and parsing the client's model objects once cost more
CPU than everything else the operator does, and a thread per call (the client is
synchronous) cost a thread hand-off and a loop wake-up per request (bench/RESULTS.md,
issue 18). `request` (synchronous, the client's pool) remains for the leader election,
which runs on a thread of its own, and for the resync's paged LISTs.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .codec import dumps, loads
from .models import GROUP, PLURAL, VERSION

FIELD_MANAGER = "clip-operator"
MERGE_PATCH = "application/merge-patch+json"
EVENT_SLOTS = 8  # Events in flight at once: they must never crowd out Jobs or status
PAGE = 200  # objects per LIST page (LISTs and resyncs): thousands of Jobs are large


def collection_paths(base: str, plural: str, namespaces: list[str]) -> list[str]:
    """The collection's path in each namespace, or cluster-wide when none is given."""
    if not namespaces:
        return [f"{base}/{plural}"]
    return [f"{base}/namespaces/{ns}/{plural}" for ns in namespaces]


def ssl_context(cfg: client.Configuration) -> ssl.SSLContext:
    """The API server's CA and our client certificate, as the official client has them."""
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    if not cfg.verify_ssl:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif cfg.assert_hostname is False:
        ctx.check_hostname = False
    return ctx


def api_error(status: int, reason: str, body: bytes) -> ApiException:
    """The official client's exception for a non-2xx answer (callers read status and body)."""
    exc = ApiException(status=status, reason=reason)
    exc.body = body.decode("utf-8", "replace")
    return exc


class Kube:
    """API calls the operator makes, each a coroutine returning plain dicts."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.host = str(api_client.configuration.host).rstrip("/")
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._event_slots: asyncio.Semaphore | None = None

    def headers(self) -> dict[str, str]:
        """Authentication headers, fresh each time (the client refreshes expiring tokens)."""
        out = {"User-Agent": str(self.api.user_agent)}
        for auth in self.api.configuration.auth_settings().values():
            if auth.get("in") == "header" and auth.get("value"):
                out[str(auth["key"])] = str(auth["value"])
        return out

    def session(self, purpose: str = "requests") -> aiohttp.ClientSession:
        """One aiohttp session per purpose, made in the running loop on first use: requests
        share a bounded pool; watches (long-lived, one per resource and namespace) get
        their own unbounded one so they never hold a request's connection."""
        found = self._sessions.get(purpose)
        if found is None or found.closed:
            cfg = self.api.configuration
            limit = 0 if purpose == "watches" else cfg.connection_pool_maxsize
            connector = aiohttp.TCPConnector(limit=limit, ssl=ssl_context(cfg))
            found = aiohttp.ClientSession(connector=connector, proxy=cfg.proxy or None)
            self._sessions[purpose] = found
        return found

    async def close(self) -> None:
        for session in list(self._sessions.values()):
            await session.close()
        self._sessions.clear()

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
        return dict(loads(data)) if data else {}

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
        purpose: str = "requests",
    ) -> dict[str, Any]:
        """One API request in the event loop; raises ApiException on non-2xx."""
        headers = self.headers()
        headers["Accept"] = "application/json"
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = dumps(body)
        async with self.session(purpose).request(
            method,
            self.host + path,
            params=query or None,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            raw = await resp.read()
            if resp.status >= 300:
                raise api_error(resp.status, resp.reason or "", raw)
        return dict(loads(raw)) if raw else {}

    async def get(
        self, path: str, query: list[tuple[str, str]], timeout: float = 30
    ) -> dict[str, Any]:
        """A GET (a LIST page, for the watches)."""
        return await self._call("GET", path, query=query, timeout=timeout)

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
        return self.list_paged_sync(
            collection_paths("/apis/batch/v1", "jobs", namespaces), label_selector, slim
        )

    def list_clipjobs_sync(
        self,
        namespaces: list[str],
        slim: Callable[[dict[str, Any]], dict[str, Any]] = lambda obj: obj,
    ) -> list[dict[str, Any]]:
        """All ClipJobs in scope (resyncs), in pages."""
        paths = collection_paths(f"/apis/{GROUP}/{VERSION}", PLURAL, namespaces)
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
                query = [("limit", str(PAGE))]
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

    def _events(self) -> asyncio.Semaphore:
        if self._event_slots is None:
            self._event_slots = asyncio.Semaphore(EVENT_SLOTS)
        return self._event_slots

    async def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        """Events take few connections at a time: they must never delay Jobs or status."""
        path = f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
        async with self._events():
            await self._call("POST", path, event, purpose="events")

    async def patch_event(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Bump a repeated Event's series instead of creating another."""
        path = f"/apis/events.k8s.io/v1/namespaces/{namespace}/events/{name}"
        async with self._events():
            await self._call("PATCH", path, patch, content_type=MERGE_PATCH, purpose="events")
