"""Pure builders: ClipJob + operator config -> Kubernetes Job manifest.

No API calls here; tests/unit/test_builders.py compares the output with golden files.
The manifest follows the operator <-> worker contract in job-image/README.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .config import OperatorConfig
from .models import GROUP, KIND, VERSION, ClipJobSpec, OutputFormat
from .timeparse import format_seconds

MANAGED_BY = "clip-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_CLIPJOB = "mememaker.io/clipjob"
LABEL_CLIPJOB_UID = "mememaker.io/clipjob-uid"
SCRATCH_DIR = "/scratch"
TERMINATION_LOG = "/dev/termination-log"

# Worker exit codes that can never succeed on retry (job-image/README.md).
PERMANENT_EXIT_CODES = [2, 3]

EXTENSIONS = {
    OutputFormat.MP4: "mp4",
    OutputFormat.WEBM: "webm",
    OutputFormat.GIF: "gif",
    OutputFormat.MP3: "mp3",
}


@dataclass(frozen=True)
class ClipJobRef:
    """Identity of a ClipJob: what the builders need besides the spec."""

    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class UploadTarget:
    """What the worker gets instead of keys: presigned PUTs for the clip and its result."""

    url: str
    headers: dict[str, str]
    result_url: str
    key: str = ""  # the clip's S3 key (content-addressed when deduplicating)
    thumbnail_url: str | None = None  # spec.thumbnail: presigned PUT of the still
    progress_url: str | None = None  # long clips: presigned PUT of the progress object


def ref_of(body: dict[str, Any]) -> ClipJobRef:
    """The identity of a ClipJob object."""
    meta = body["metadata"]
    return ClipJobRef(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


# Finished Jobs live at least this long, so their Pods' results reach status first.
MIN_TTL_SECONDS_AFTER_FINISHED = 60


LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"


def job_name(ref: ClipJobRef) -> str:
    """Deterministic, DNS-1123 and <= 63 chars: the same ClipJob always maps to one Job."""
    digest = hashlib.sha256(ref.uid.encode()).hexdigest()[:6]
    prefix = ref.name[:46].rstrip("-.")
    return f"{prefix}-clip-{digest}"


def object_key(ref: ClipJobRef, spec: ClipJobSpec) -> str:
    """S3 key of the clip: unique per ClipJob (uid), readable (namespace/name)."""
    return f"{ref.namespace}/{ref.name}-{ref.uid[:8]}.{EXTENSIONS[spec.output.format]}"


def download_filename(ref: ClipJobRef, spec: ClipJobSpec) -> str:
    return f"{ref.name}.{EXTENSIONS[spec.output.format]}"


def owner_reference(ref: ClipJobRef) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def resolve_bucket(spec: ClipJobSpec, config: OperatorConfig) -> str | None:
    if spec.storage and spec.storage.bucket:
        return spec.storage.bucket
    return config.s3_bucket


THUMBNAIL_EXTENSIONS = {"jpeg": "jpg", "webp": "webp", "gif": "gif"}
THUMBNAIL_TYPES = {"jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}


PROGRESS_EVERY_SECONDS = 5  # the worker writes its progress object at most this often


def progress_key(clip_key: str) -> str:
    """The worker's progress object (long clips), beside the clip."""
    return f"{clip_key}.progress.json"


def _seconds(value: float | None) -> str | None:
    return None if value is None else format_seconds(value)


def thumbnail_key(clip_key: str, spec: ClipJobSpec) -> str | None:
    """The thumbnail's S3 key, beside the clip's (None without spec.thumbnail)."""
    if spec.thumbnail is None:
        return None
    return f"{clip_key}.thumb.{THUMBNAIL_EXTENSIONS[spec.thumbnail.format]}"


def _media_env(spec: ClipJobSpec) -> list[tuple[str, str | None]]:
    """Issue 16's options (captions, crop, loudness): only the variables of those set."""
    env: list[tuple[str, str | None]] = []
    captions, crop, loud, mark = (
        spec.captions, spec.output.crop, spec.output.loudness, spec.watermark
    )  # fmt: skip
    if captions:
        env += [
            ("CLIP_CAPTION_TOP", captions.top),
            ("CLIP_CAPTION_BOTTOM", captions.bottom),
            ("CLIP_CAPTION_UPPERCASE", "true" if captions.upper_case else None),
        ]
    if crop:
        env += [("CLIP_CROP_ASPECT", crop.aspect), ("CLIP_CROP_POSITION", f"{crop.position:g}")]
    if spec.subtitles:
        env += [
            ("CLIP_SUBTITLES_URL", spec.subtitles.url),
            ("CLIP_SUBTITLES_LANGUAGE", spec.subtitles.language),
        ]
    if mark:
        env += [
            ("CLIP_WATERMARK_URL", mark.url),
            ("CLIP_WATERMARK_POSITION", mark.position),
            ("CLIP_WATERMARK_OPACITY", f"{mark.opacity:g}"),
            ("CLIP_WATERMARK_WIDTH", f"{mark.width:g}"),
        ]
    if loud:
        env += [
            ("CLIP_LOUDNESS_TARGET", f"{loud.target_lufs:g}"),
            ("CLIP_LOUDNESS_TRUE_PEAK", f"{loud.true_peak_dbtp:g}"),
        ]
    return env


def _env(
    spec: ClipJobSpec, ref: ClipJobRef, config: OperatorConfig, upload: UploadTarget | None
) -> list[dict[str, Any]]:
    """The worker's inputs. No credentials: the upload is presigned for the exact key."""
    clip_key = upload.key if upload and upload.key else object_key(ref, spec)
    plain: list[tuple[str, str | None]] = [
        ("CLIP_SOURCE_URL", spec.source.url),
        ("CLIP_SOURCE_FORMAT", spec.source.format),
        ("CLIP_START", format_seconds(spec.start_seconds)),
        ("CLIP_END", format_seconds(spec.end_seconds)),
        ("CLIP_OUTPUT_FORMAT", spec.output.format.value),
        ("CLIP_MODE", spec.output.mode.value),
        ("CLIP_MAX_HEIGHT", str(spec.output.max_height) if spec.output.max_height else None),
        ("CLIP_MAX_CLIP_SECONDS", str(config.max_clip_seconds)),
        ("CLIP_MAX_OUTPUT_BYTES", str(config.max_output_bytes)),
        ("CLIP_NETWORK_TIMEOUT_SECONDS", str(config.network_timeout_seconds)),
        ("CLIP_ALLOW_PRIVATE_NETWORKS", ",".join(config.allow_private_networks) or None),
        ("CLIP_ALLOW_PORTS", ",".join(str(p) for p in config.allow_ports) or None),
        ("CLIP_WORK_DIR", SCRATCH_DIR),
        ("CLIP_TERMINATION_LOG", TERMINATION_LOG),
        ("CLIP_OUTPUT_FILENAME", download_filename(ref, spec)),
        ("CLIP_S3_BUCKET", resolve_bucket(spec, config)),
        ("CLIP_S3_KEY", clip_key),
        ("HOME", SCRATCH_DIR),  # yt-dlp wants a writable cache dir; the root fs is read-only
        *_media_env(spec),
    ]
    if spec.thumbnail is not None:
        plain += [
            ("CLIP_THUMBNAIL_FORMAT", spec.thumbnail.format),
            ("CLIP_THUMBNAIL_AT", format_seconds(spec.thumbnail.at_seconds)),
            ("CLIP_THUMBNAIL_KEY", thumbnail_key(clip_key, spec)),
            ("CLIP_THUMBNAIL_SECONDS", _seconds(spec.thumbnail.duration_seconds)),
        ]
    if upload is not None:
        plain += [
            ("CLIP_UPLOAD_URL", upload.url),
            ("CLIP_UPLOAD_HEADERS", json.dumps(upload.headers, sort_keys=True)),
            ("CLIP_RESULT_URL", upload.result_url),
            ("CLIP_THUMBNAIL_URL", upload.thumbnail_url),
            ("CLIP_PROGRESS_URL", upload.progress_url),
            ("CLIP_PROGRESS_EVERY", str(PROGRESS_EVERY_SECONDS) if upload.progress_url else None),
        ]
    return [{"name": k, "value": v} for k, v in plain if v is not None]


def build_job(
    ref: ClipJobRef,
    spec: ClipJobSpec,
    config: OperatorConfig,
    upload: UploadTarget | None = None,
) -> dict[str, Any]:
    """The Job that makes one clip. Pure: same inputs, same manifest."""
    name = job_name(ref)
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_CLIPJOB: ref.name[:63].rstrip("-._"),
        LABEL_CLIPJOB_UID: ref.uid,
        "app.kubernetes.io/name": "clip-worker",
        "app.kubernetes.io/component": "clip",
    }
    if config.kueue_queue_name:  # Kueue admits (unsuspends) the Job when quota allows
        labels[LABEL_KUEUE_QUEUE] = config.kueue_queue_name
    deadline = spec.deadline_seconds or config.default_deadline_seconds
    retries = spec.retries if spec.retries is not None else config.default_retries
    container = {
        "name": "clip",
        "image": config.job_image,
        "imagePullPolicy": config.job_image_pull_policy,
        "env": _env(spec, ref, config, upload),
        "resources": {
            "requests": {
                "cpu": config.job_cpu_request,
                "memory": config.job_memory_request,
                "ephemeral-storage": "64Mi",
            },
            "limits": {
                "cpu": config.job_cpu_limit,
                "memory": config.job_memory_limit,
                "ephemeral-storage": config.job_scratch_size,
            },
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH_DIR}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": ref.namespace,
            "labels": labels,
            "annotations": {"mememaker.io/clipjob-uid": ref.uid},
            "ownerReferences": [owner_reference(ref)],
        },
        "spec": {
            **({"suspend": True} if config.kueue_queue_name else {}),
            "backoffLimit": retries,
            "activeDeadlineSeconds": deadline,
            "ttlSecondsAfterFinished": max(
                config.ttl_seconds_after_finished, MIN_TTL_SECONDS_AFTER_FINISHED
            ),
            "completions": 1,
            "parallelism": 1,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": "clip",
                            "operator": "In",
                            "values": PERMANENT_EXIT_CODES,
                        },
                    },
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "scratch", "emptyDir": {"sizeLimit": config.job_scratch_size}}
                    ],
                },
            },
        },
    }
