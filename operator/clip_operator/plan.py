"""The vocabulary of decisions: what a decision may need, do, and write."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .models import Phase

if TYPE_CHECKING:
    from .notify import Delivery

FINALIZER = "mememaker.io/delete-s3-object"


class Need(StrEnum):
    PODS = "pods"  # list the Job's Pods
    UPLOAD = "upload"  # presign the worker's upload (reads a tenant Secret)
    LOOKUP_JOB = "lookup-job"  # GET the Job named in status (is it really gone?)
    JOB_HISTORY = "job-history"  # did that Job ever exist (its Events)?
    RECOVER = "recover"  # read the worker's result object from S3
    URL = "url"  # presign the download URL
    DELETE_OBJECTS = "delete-objects"  # delete the clip (deletionPolicy Delete)
    NOTIFY = "notify"  # deliver the webhook of a finished ClipJob (in the background)
    TWIN = "twin"  # is an identical, older ClipJob making this clip right now? (dedupe)
    OBJECT_USERS = "object-users"  # which other ClipJobs use this clip? (before deleting it)
    KUEUE = "kueue"  # why Kueue has not admitted the suspended Job (its Workload)
    PROGRESS = "progress"  # read a long clip's progress object from S3 (in the background)


class Act(StrEnum):
    REQUEST_SLOT = "request-slot"
    WITHDRAW = "withdraw"  # give up the slot / leave the queue
    ADD_FINALIZER = "add-finalizer"
    CREATE_JOB = "create-job"
    DELETE_JOB = "delete-job"  # Foreground: Pods go first, no upload after the object delete
    REMOVE_FINALIZER = "remove-finalizer"
    DELETE_CLIPJOB = "delete-clipjob"  # its time to live after finishing is over


@dataclass
class Facts:
    """What the controller learnt for this decision (None: not asked yet)."""

    admitted: bool = False
    upload_problem: tuple[str, str] | None = None  # (reason, message): cannot presign
    upload_ready: bool = False
    create_refused: tuple[int, str] | None = None  # (HTTP status, API message)
    job_conflict: str | None = None  # a same-named Job owned by something else
    job_absent: bool | None = None  # LOOKUP_JOB answer
    job_existed: bool | None = None  # JOB_HISTORY answer
    recovered: dict[str, Any] | None = None  # RECOVER answer ({} = nothing in S3)
    url: tuple[str, str, str] | None = None  # (url, expiresAt, issuedAt)
    url_error: str | None = None
    thumbnail_url: str | None = None  # spec.thumbnail: signed with the clip's URL, same life
    delete_error: tuple[str, bool] | None = None  # (message, retryable)
    deleted_objects: bool = False
    notification: Delivery | None = None  # NOTIFY answer: delivered, retrying, or why not
    twin: str | None = None  # TWIN answer: the older identical ClipJob's name ("" = none)
    object_users: list[str] | None = None  # OBJECT_USERS answer: names of other users
    kueue: str | None = None  # KUEUE answer: Kueue's words ("" = none found)
    progress: dict[str, Any] | None = None  # PROGRESS answer ({} = none yet or unreadable)


@dataclass
class Plan:
    status: dict[str, Any] | None = None  # desired status fields (merged, diffed by caller)
    actions: list[Act] = field(default_factory=list)
    need: Need | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    requeue_after: float | None = None
    rate_limited: bool = False  # requeue with backoff (refusals, S3 trouble)
    terminal: Phase | None = None  # the ClipJob reaches this phase with this plan
    result: dict[str, Any] | None = None  # the worker's result (metrics)
    url_secret: tuple[str, str] | None = None  # (url, expiresAt) for the URL Secret (policy)


@dataclass(frozen=True)
class Settings:
    """The operator settings decisions depend on."""

    url_policy: str = "Status"
    url_refresh_fraction: float = 0.2
    delete_retry_limit_seconds: int = 3600
    default_bucket: str | None = None
    notify_url: str | None = None  # the operator's default webhook (ClipJobs without one)
    notify_retry_seconds: float = 600.0  # how long after finishing a webhook is (re)tried
    clipjob_ttl_seconds: int = 0  # default ttlSecondsAfterFinished; 0 = keep
    url_refresh_horizon_seconds: int = 7 * 86400  # 0 = refresh forever
    dedupe: str = "Off"  # Off | Namespace | Cluster (dedupe.py)
    progress_min_clip_seconds: int = 0  # clips this long report progress; 0 = none
