"""Pydantic models of the ClipJob spec and status, mirroring crds/clipjob.yaml.

The CRD is the source of truth; tests/unit/test_models.py fails when the two drift.
Admission already rejects most bad specs; these models re-check everything so that a
ClipJob that slipped past (an older CRD, a disabled CEL rule) fails with a clear
`InvalidSpec` status instead of a crash loop.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from .timeparse import parse_timestamp

GROUP = "mememaker.io"
VERSION = "v1alpha1"
PLURAL = "clipjobs"
KIND = "ClipJob"

MAX_CLIP_SECONDS = 600  # the schema's maximum clip length
MAX_URL_EXPIRES_SECONDS = 604800  # S3 SigV4 presigned URLs live at most 7 days


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    def to_kubernetes(self) -> dict[str, Any]:
        """Serialise with the API's camelCase names, leaving unset fields out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Source(_Model):
    url: str = Field(max_length=2048)
    format: str | None = Field(default=None, max_length=256)

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"source.url must be an http(s) URL with a host, got {value!r}")
        return value


class OutputFormat(StrEnum):
    MP4 = "mp4"
    WEBM = "webm"
    GIF = "gif"
    MP3 = "mp3"


class Mode(StrEnum):
    ACCURATE = "accurate"
    FAST = "fast"


CONTENT_TYPES = {
    OutputFormat.MP4: "video/mp4",
    OutputFormat.WEBM: "video/webm",
    OutputFormat.GIF: "image/gif",
    OutputFormat.MP3: "audio/mpeg",
}


MAX_CAPTION_CHARS = 300
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


class Crop(_Model):
    aspect: str = Field(max_length=9, pattern=r"^[1-9][0-9]{0,3}:[1-9][0-9]{0,3}$")
    position: float = Field(default=0.5, ge=0, le=1)

    @field_validator("aspect")
    @classmethod
    def _ratio(cls, value: str) -> str:
        w, h = (int(part) for part in value.split(":"))
        if w > 10 * h or h > 10 * w:
            raise ValueError(f"crop.aspect must be between 1:10 and 10:1, got {value!r}")
        return value


class Loudness(_Model):
    target_lufs: float = Field(default=-14.0, ge=-70, le=-5)
    true_peak_dbtp: float = Field(default=-1.0, ge=-9, le=0)


class Output(_Model):
    format: OutputFormat = OutputFormat.MP4
    mode: Mode = Mode.ACCURATE
    max_height: int | None = Field(default=None, ge=16, le=4320)
    crop: Crop | None = None
    loudness: Loudness | None = None

    @model_validator(mode="after")
    def _needs(self) -> Output:
        if self.crop and self.format == OutputFormat.MP3:
            raise ValueError("output.crop needs video; output format mp3 has none")
        if self.loudness and self.format == OutputFormat.GIF:
            raise ValueError("output.loudness needs audio; output format gif has none")
        return self


class Subtitles(_Model):
    url: str | None = Field(default=None, max_length=2048)
    language: str | None = Field(
        default=None, max_length=35, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8}){0,3}$"
    )

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        parts = urlsplit(value or "http://x")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"subtitles.url must be an http(s) URL with a host, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> Subtitles:
        if (self.url is None) == (self.language is None):
            raise ValueError("subtitles needs exactly one of url and language")
        return self


class Watermark(_Model):
    url: str = Field(max_length=2048)
    position: Literal["top-left", "top-right", "bottom-left", "bottom-right"] = "bottom-right"
    opacity: float = Field(default=0.8, ge=0, le=1)
    width: float = Field(default=0.2, ge=0.02, le=1)

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"watermark.url must be an http(s) URL with a host, got {value!r}")
        return value


class Thumbnail(_Model):
    format: Literal["jpeg", "webp", "gif"] = "jpeg"
    at_seconds: float = Field(default=0.0, ge=0, le=MAX_CLIP_SECONDS)
    duration_seconds: float | None = Field(default=None, ge=0.5, le=10)

    @model_validator(mode="after")
    def _preview_only(self) -> Thumbnail:
        if self.duration_seconds is not None and self.format != "gif":
            raise ValueError("thumbnail.durationSeconds is for the animated preview (gif) only")
        return self


class Captions(_Model):
    top: str | None = Field(default=None, min_length=1, max_length=MAX_CAPTION_CHARS)
    bottom: str | None = Field(default=None, min_length=1, max_length=MAX_CAPTION_CHARS)
    upper_case: bool = False

    @field_validator("top", "bottom")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL.search(value):
            raise ValueError("must not contain control characters other than newlines")
        return value

    @model_validator(mode="after")
    def _some_text(self) -> Captions:
        if not self.top and not self.bottom:
            raise ValueError("captions needs top or bottom text")
        return self


class SecretRef(_Model):
    name: str = Field(min_length=1, max_length=253)


class Storage(_Model):
    bucket: str | None = Field(default=None, min_length=3, max_length=63)
    secret_ref: SecretRef | None = None
    endpoint: str | None = Field(default=None, max_length=2048)
    region: str | None = Field(default=None, max_length=64)


MAX_TTL_SECONDS = 365 * 86400


class NotifySecretRef(_Model):
    name: str = Field(min_length=1, max_length=253)
    key: str | None = Field(default=None, min_length=1, max_length=253)


class Notify(_Model):
    url: str = Field(max_length=2048)
    secret_ref: NotifySecretRef | None = None

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
            raise ValueError(
                "notify.url must be an http(s) URL with a host and no user:password@, "
                f"got {value!r}"
            )
        return value


class ClipJobSpec(_Model):
    source: Source
    start: str = Field(max_length=32)
    end: str = Field(max_length=32)
    output: Output = Output()
    captions: Captions | None = None
    thumbnail: Thumbnail | None = None
    watermark: Watermark | None = None
    subtitles: Subtitles | None = None
    storage: Storage | None = None
    url_expires_seconds: int | None = Field(default=None, ge=60, le=MAX_URL_EXPIRES_SECONDS)
    deadline_seconds: int | None = Field(default=None, ge=30, le=86400)
    retries: int | None = Field(default=None, ge=0, le=10)
    deletion_policy: Literal["Retain", "Delete"] = "Retain"
    notify: Notify | None = None
    priority: int = Field(default=0, ge=-1000, le=1000)
    dedupe: bool = True
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=MAX_TTL_SECONDS)

    @field_validator("start", "end")
    @classmethod
    def _timestamp(cls, value: str) -> str:
        parse_timestamp(value)  # raises with the grammar in the message
        return value

    @model_validator(mode="after")
    def _captions_need_video(self) -> ClipJobSpec:
        if self.captions and self.output.format == OutputFormat.MP3:
            raise ValueError("captions need video; output format mp3 has none")
        if self.subtitles and self.output.format == OutputFormat.MP3:
            raise ValueError("subtitles need video; output format mp3 has none")
        if self.watermark and self.output.format == OutputFormat.MP3:
            raise ValueError("watermark needs video; output format mp3 has none")
        if self.thumbnail and self.output.format == OutputFormat.MP3:
            raise ValueError("thumbnail needs video; output format mp3 has none")
        if self.thumbnail and self.thumbnail.at_seconds >= self.duration_seconds:
            raise ValueError(
                f"thumbnail.atSeconds ({self.thumbnail.at_seconds:g}) must be inside the clip, "
                f"which lasts {self.duration_seconds:g} s"
            )
        return self

    @model_validator(mode="after")
    def _range(self) -> ClipJobSpec:
        start, end = self.start_seconds, self.end_seconds
        if end <= start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        if end - start > MAX_CLIP_SECONDS:
            raise ValueError(f"clip is {end - start:g} s long; the maximum is {MAX_CLIP_SECONDS} s")
        return self

    @property
    def start_seconds(self) -> float:
        return parse_timestamp(self.start)

    @property
    def end_seconds(self) -> float:
        return parse_timestamp(self.end)

    @property
    def duration_seconds(self) -> float:
        return round(self.end_seconds - self.start_seconds, 6)


class Phase(StrEnum):
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


TERMINAL_PHASES = (Phase.SUCCEEDED, Phase.FAILED)


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    observed_generation: int | None = None
    last_transition_time: str
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field(default="", max_length=32768)


class ThumbnailStatus(_Model):
    key: str
    content_type: str | None = None
    width: int | None = None
    height: int | None = None
    size_bytes: int | None = None
    at_seconds: float | None = None
    duration_seconds: float | None = None


class LoudnessStatus(_Model):
    target_lufs: float | None = None
    integrated_lufs: float | None = None
    range_lu: float | None = None
    true_peak_dbtp: float | None = None


class OutputStatus(_Model):
    bucket: str
    key: str
    size_bytes: int | None = None
    duration_seconds: float | None = None
    width: int | None = None
    height: int | None = None
    content_type: str | None = None
    cut_path: str | None = None
    truncated: bool | None = None
    loudness: LoudnessStatus | None = None
    thumbnail: ThumbnailStatus | None = None


class Timings(_Model):
    queue_seconds: float | None = None
    download_seconds: float | None = None
    encode_seconds: float | None = None
    upload_seconds: float | None = None
    total_seconds: float | None = None


class NotificationStatus(_Model):
    phase: str | None = None
    delivered: bool | None = None
    reason: str | None = None
    attempts: int | None = None
    last_attempt_at: str | None = None
    response_code: int | None = None
    message: str | None = None


class Progress(_Model):
    phase: Literal["Resolving", "Downloading", "Encoding", "Uploading"]
    percent: int = Field(ge=0, le=100, strict=True)
    updated_at: str = Field(max_length=40)


class ClipJobStatus(_Model):
    model_config = ConfigDict(extra="ignore")  # tolerate fields of newer operators

    phase: Phase | None = None
    conditions: list[Condition] = []
    observed_generation: int | None = None
    job_name: str | None = None
    attempts: int | None = None
    queued_at: str | None = None
    start_time: str | None = None
    completion_time: str | None = None
    output: OutputStatus | None = None
    url: str | None = None
    url_expires_at: str | None = None
    thumbnail_url: str | None = None
    url_issued_at: str | None = None
    url_secret_name: str | None = None
    progress: Progress | None = None
    cache: Literal["Hit", "Miss"] | None = None
    notification: NotificationStatus | None = None
    timings: Timings | None = None
    reason: str | None = None
    message: str | None = None


class InvalidSpec(ValueError):
    """A spec the operator cannot run; the message is shown to the user as is."""


def parse_spec(spec: Any) -> ClipJobSpec:
    """Validate a raw spec; raise InvalidSpec with every problem, by field path."""
    try:
        return ClipJobSpec.model_validate(spec)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = ".".join(str(p) for p in ("spec", *err["loc"]))
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{path}: {msg}")
        raise InvalidSpec("; ".join(problems)) from None
