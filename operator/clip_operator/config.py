"""Operator configuration from environment variables prefixed CLIP_OPERATOR_.

Validated once at start; a bad value stops the operator with one line naming the
variable, the value and what is expected.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from .models import MAX_CLIP_SECONDS, MAX_URL_EXPIRES_SECONDS

ENV_PREFIX = "CLIP_OPERATOR_"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"


class OperatorConfig(BaseModel):
    """Every setting, its default and its bounds. Field NAME is env CLIP_OPERATOR_NAME."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespaces: list[str] = Field(default=[], description="Namespaces to watch; empty = all")
    job_image: str = Field(default="clip-job:dev", min_length=1)
    job_image_pull_policy: str = Field(
        default="IfNotPresent", pattern="^(Always|IfNotPresent|Never)$"
    )
    s3_endpoint: str | None = Field(default=None, description="Default S3-compatible endpoint")
    s3_region: str = "us-east-1"
    s3_bucket: str | None = Field(default=None, description="Default bucket for ClipJobs")
    s3_allowed_endpoints: list[str] = Field(
        default=[],
        description="S3 endpoints a ClipJob's spec.storage.endpoint may name (besides the default)",
    )
    s3_public_endpoint: str | None = Field(
        default=None, description="Endpoint used in presigned URLs if users reach S3 elsewhere"
    )
    in_flight_limit: int = Field(default=10, ge=0, description="Jobs running at once; 0 = no limit")
    dedupe: str = Field(
        default="Off",
        pattern="^(Off|Namespace|Cluster)$",
        description="Identical ClipJobs reuse one clip: within a namespace (Namespace), "
        "across namespaces storing into the same bucket (Cluster), or never (Off)",
    )
    progress_min_clip_seconds: int = Field(
        default=60,
        ge=0,
        description="Clips at least this long report progress (status.progress, one S3 "
        "read per running ClipJob every 10 s); 0 = never",
    )
    kueue_queue_name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        description="Kueue LocalQueue for the Jobs: created suspended with the "
        "kueue.x-k8s.io/queue-name label; the operator's own in-flight limits step aside",
    )
    namespace_in_flight_limit: int = Field(
        default=0,
        ge=0,
        description="Jobs one namespace may run at once; 0 = only the global limit",
    )
    namespace_in_flight_limits: str | None = Field(
        default=None,
        description='JSON object overriding the per-namespace limit, e.g. {"team-a": 20}',
    )
    clipjob_ttl_seconds_after_finished: int = Field(
        default=0,
        ge=0,
        description="Delete ClipJobs this long after they finish unless their spec sets "
        "ttlSecondsAfterFinished; 0 = keep them",
    )
    url_refresh_horizon_seconds: int = Field(
        default=7 * 86400,
        ge=0,
        description="Stop refreshing the download URL of a ClipJob without a TTL this long "
        "after it finished (bounds status writes); 0 = refresh forever",
    )
    default_url_expires_seconds: int = Field(default=3600, ge=60, le=MAX_URL_EXPIRES_SECONDS)
    url_refresh_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Refresh a URL when this fraction of its life remains"
    )
    default_deadline_seconds: int = Field(default=600, ge=30, le=86400)
    default_retries: int = Field(default=2, ge=0, le=10)
    ttl_seconds_after_finished: int = Field(default=3600, ge=0)
    max_clip_seconds: int = Field(default=MAX_CLIP_SECONDS, ge=1, le=MAX_CLIP_SECONDS)
    # A single presigned PUT carries the clip: S3 caps one PUT at 5 GiB.
    max_output_bytes: int = Field(default=2 * 1024**3, ge=1024, le=5 * 1024**3)
    allow_private_networks: list[str] = Field(default=[])
    allow_ports: list[int] = Field(
        default=[], description="Ports a source may use besides 80 and 443 (the worker's guard)"
    )
    network_timeout_seconds: int = Field(default=30, ge=1, le=600)
    job_cpu_request: str = Field(default="500m", pattern=QUANTITY_PATTERN)
    job_cpu_limit: str = Field(default="2", pattern=QUANTITY_PATTERN)
    job_memory_request: str = Field(default="256Mi", pattern=QUANTITY_PATTERN)
    job_memory_limit: str = Field(default="1Gi", pattern=QUANTITY_PATTERN)
    job_scratch_size: str = Field(default="4Gi", pattern=QUANTITY_PATTERN)
    log_format: str = Field(
        default="text",
        pattern="^(text|json)$",
        description="Log output: text, or json (one object per line; ClipJob lines carry "
        "namespace, name and uid); `run --log-format` overrides",
    )
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    health_port: int = Field(default=8081, ge=0, le=65535)
    loop_interval_seconds: float = Field(default=5.0, gt=0, le=300)
    api_threads: int = Field(default=16, ge=2, le=256, description="Threads for API calls")
    storage_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    resync_seconds: float = Field(
        default=300, ge=1, le=86400, description="Period of the full LIST that resyncs the cache"
    )
    # 64: a reconcile mostly waits for the API server (two requests for a new ClipJob); at
    # 8, a steady 50 ClipJobs/s queued for minutes on a loaded control plane (issue 18).
    workers: int = Field(default=64, ge=1, le=256, description="ClipJobs reconciled at once")
    url_policy: str = Field(
        default="Status",
        pattern="^(Status|Secret|None)$",
        description="Where the presigned download URL goes: Status (status.url), Secret "
        "(a Secret owned by the ClipJob, named in status.urlSecretName) or None",
    )
    worker_network_policy: str | None = Field(
        default=None,
        description="JSON NetworkPolicy spec created as clip-worker-egress in each Job namespace",
    )
    stall_seconds: float = Field(
        default=300, ge=5, description="Liveness fails when the work queue makes no progress"
    )
    notify_url: str | None = Field(
        default=None,
        max_length=2048,
        description="Default webhook (CloudEvents POST on Succeeded/Failed) for ClipJobs "
        "without spec.notify; its host may be private",
    )
    notify_secret: str | None = Field(
        default=None,
        description="namespace/name of the Secret whose key signingKey signs the default "
        "webhook's requests (HMAC-SHA256); empty = unsigned",
    )
    notify_allowed_hosts: list[str] = Field(
        default=[],
        description="Host names or CIDRs a ClipJob's webhook may reach although private or "
        "loopback (link-local and metadata addresses never)",
    )
    notify_retry_seconds: float = Field(
        default=600,
        ge=0,
        le=86400,
        description="How long after a ClipJob finished its webhook is retried (5xx, 429, "
        "connection errors)",
    )
    notify_timeout_seconds: float = Field(
        default=10, gt=0, le=120, description="Total time limit of one webhook request"
    )
    notify_connect_timeout_seconds: float = Field(
        default=5, gt=0, le=60, description="Time limit to resolve and connect to a webhook"
    )
    delete_retry_limit_seconds: int = Field(
        default=3600,
        ge=0,
        description="How long deletion waits for S3 object removal before giving up",
    )
    leader_election: bool = Field(
        default=False,
        description="Reconcile only while holding a coordination.k8s.io Lease (several "
        "replicas: one leads, the others stand by warm); the chart turns it on",
    )
    lease_name: str = Field(default="clip-operator", min_length=1, max_length=253)
    lease_namespace: str | None = Field(
        default=None, description="Namespace of the Lease; default: the operator Pod's own"
    )
    lease_duration_seconds: float = Field(
        default=12, ge=1, le=300, description="A standby takes over a Lease not renewed this long"
    )
    renew_deadline_seconds: float = Field(
        default=8, gt=0, description="The leader steps down when it cannot renew for this long"
    )
    retry_period_seconds: float = Field(
        default=2, gt=0, description="How often the leader renews and a standby tries to acquire"
    )

    @field_validator("renew_deadline_seconds")
    @classmethod
    def _renew(cls, value: float, info: ValidationInfo) -> float:
        duration = info.data.get("lease_duration_seconds")
        if duration is not None and value >= duration:
            raise ValueError(f"must be shorter than the lease duration ({duration:g} s)")
        return value

    @field_validator("retry_period_seconds")
    @classmethod
    def _retry(cls, value: float, info: ValidationInfo) -> float:
        deadline = info.data.get("renew_deadline_seconds")
        if deadline is not None and value * 1.2 >= deadline:
            raise ValueError(
                f"times 1.2 (jitter) must be shorter than the renew deadline ({deadline:g} s)"
            )
        return value

    @field_validator("worker_network_policy")
    @classmethod
    def _policy(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            spec = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(spec, dict) or "podSelector" not in spec:
            raise ValueError("must be a NetworkPolicy spec object with a podSelector")
        return value

    @field_validator("s3_allowed_endpoints")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        from .endpoints import EndpointRefused, normalise

        for url in value:
            try:
                normalise(url)
            except EndpointRefused as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("namespace_in_flight_limits")
    @classmethod
    def _ns_limits(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            limits = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(limits, dict) or not all(
            isinstance(k, str) and type(v) is int and v >= 0 for k, v in limits.items()
        ):
            raise ValueError('must be a JSON object of namespace: limit (>= 0), e.g. {"a": 5}')
        return value

    def namespace_limits(self) -> dict[str, int]:
        if not self.namespace_in_flight_limits:
            return {}
        return dict(json.loads(self.namespace_in_flight_limits))

    @field_validator("notify_url")
    @classmethod
    def _notify_url(cls, value: str | None) -> str | None:
        from urllib.parse import urlsplit

        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
            raise ValueError("must be an http(s) URL with a host and no user:password@")
        return value

    @field_validator("notify_secret")
    @classmethod
    def _notify_secret(cls, value: str | None) -> str | None:
        import re

        pattern = r"[a-z0-9]([-a-z0-9]*)/[a-z0-9]([-.a-z0-9]*)"
        if value is not None and not re.fullmatch(pattern, value):
            raise ValueError("must be namespace/name of a Secret, e.g. clip-system/webhook-key")
        return value

    @field_validator("notify_allowed_hosts")
    @classmethod
    def _notify_hosts(cls, value: list[str]) -> list[str]:
        import re

        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not re.fullmatch(r"[A-Za-z0-9]([-.A-Za-z0-9]*[A-Za-z0-9])?\.?", entry):
                    raise ValueError(f"{entry!r} is neither a host name nor a CIDR") from None
        return value

    def network_policy_spec(self) -> dict[str, Any] | None:
        return json.loads(self.worker_network_policy) if self.worker_network_policy else None

    @field_validator("allow_ports")
    @classmethod
    def _ports(cls, value: list[int]) -> list[int]:
        for port in value:
            if not 1 <= port <= 65535:
                raise ValueError(f"{port} is not a TCP port (1-65535)")
        return value

    @field_validator("allow_private_networks")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR such as 10.0.0.0/8") from None
        return value

    def effective_url_expiry(self, requested: int | None) -> int:
        return min(requested or self.default_url_expires_seconds, MAX_URL_EXPIRES_SECONDS)


class ConfigError(ValueError):
    """A bad operator setting; the message names the environment variable."""


_LIST_FIELDS = {
    "namespaces",
    "allow_private_networks",
    "allow_ports",
    "s3_allowed_endpoints",
    "notify_allowed_hosts",
}


def load_config(environ: Mapping[str, str] | None = None) -> OperatorConfig:
    """Read CLIP_OPERATOR_* variables; raise ConfigError naming every bad one."""
    env = os.environ if environ is None else environ
    raw: dict[str, object] = {}
    known = set(OperatorConfig.model_fields)
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in known:
            raise ConfigError(
                f"{key} is not a clip-operator setting; known settings: "
                + ", ".join(ENV_PREFIX + k.upper() for k in sorted(known))
            )
        if name in _LIST_FIELDS:
            raw[name] = [item.strip() for item in value.split(",") if item.strip()]
        else:
            raw[name] = value if value != "" else None
    raw = {k: v for k, v in raw.items() if v is not None}
    try:
        return OperatorConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0])
            shown = env.get(ENV_PREFIX + field.upper(), "")
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{ENV_PREFIX}{field.upper()}={shown!r}: {msg}")
        raise ConfigError("invalid operator configuration: " + "; ".join(problems)) from None
