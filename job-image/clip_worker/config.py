"""The worker's inputs, read from CLIP_* environment variables and checked once."""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from clip_worker import options
from clip_worker.result import Reason, WorkerError

OUTPUT_FORMATS = ("mp4", "webm", "gif", "mp3")
MODES = ("accurate", "fast")
ADDRESSING_STYLES = ("path", "virtual", "auto")

DEFAULT_MAX_CLIP_SECONDS = 600.0
DEFAULT_MAX_OUTPUT_BYTES = 2 * 1024**3
DEFAULT_NETWORK_TIMEOUT = 30.0
DEFAULT_PROCESS_TIMEOUT = 900.0
# Ports a source connection may use unless CLIP_ALLOW_PORTS adds more.
DEFAULT_ALLOW_PORTS = (80, 443)

_SECONDS = re.compile(r"^\d+(\.\d+)?$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Config:
    """Everything the worker needs for one clip."""

    source_url: str
    start: float
    end: float
    output_format: str
    mode: str
    s3_bucket: str
    s3_key: str
    source_format: str | None = None
    max_height: int | None = None
    max_clip_seconds: float = DEFAULT_MAX_CLIP_SECONDS
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    max_scratch_bytes: int = 2 * DEFAULT_MAX_OUTPUT_BYTES
    network_timeout: float = DEFAULT_NETWORK_TIMEOUT
    process_timeout: float = DEFAULT_PROCESS_TIMEOUT
    allow_private_networks: tuple[Network, ...] = field(default_factory=tuple)
    work_dir: str = "/scratch"
    termination_log: str = "/dev/termination-log"
    output_filename: str | None = None
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    s3_addressing_style: str = "auto"
    allow_ports: tuple[int, ...] = DEFAULT_ALLOW_PORTS
    upload_url: str | None = None
    upload_headers: dict[str, str] = field(default_factory=dict)
    result_url: str | None = None
    captions: options.Captions | None = None
    crop: options.Crop | None = None
    loudness: options.Loudness | None = None
    thumbnail: options.Thumbnail | None = None
    watermark: options.Watermark | None = None
    subtitles: options.Subtitles | None = None

    @property
    def filtered(self) -> bool:
        """A filter touches every video frame: the clip is re-encoded, never copied."""
        return any(
            x is not None for x in (self.captions, self.crop, self.watermark, self.subtitles)
        )

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def presigned(self) -> bool:
        """The operator presigned the upload: PUT to URLs, no S3 credentials, no boto3."""
        return self.upload_url is not None


def _invalid(message: str) -> WorkerError:
    return WorkerError(Reason.INVALID_INPUT, message)


def parse_seconds(name: str, raw: str) -> float:
    """A non-negative decimal number of seconds, as the operator normalises it ("65.5")."""
    value = raw.strip()
    if not _SECONDS.match(value):
        raise _invalid(f"{name} must be seconds as a decimal string like '65.5', got {raw!r}")
    return float(value)


def _positive_number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _invalid(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise _invalid(f"{name} must be a positive number, got {raw!r}")
    return value


def _positive_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) <= 0:
        raise _invalid(f"{name} must be a positive integer, got {raw!r}")
    return int(raw)


def parse_networks(raw: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs, e.g. '127.0.0.0/8,10.0.0.0/8'."""
    networks: list[Network] = []
    for part in raw.split(","):
        text = part.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise _invalid(
                f"CLIP_ALLOW_PRIVATE_NETWORKS entry {text!r} is not a CIDR like 10.0.0.0/8"
            ) from None
    return tuple(networks)


def parse_ports(raw: str) -> tuple[int, ...]:
    """80 and 443, plus the comma-separated ports of CLIP_ALLOW_PORTS."""
    ports = list(DEFAULT_ALLOW_PORTS)
    for part in raw.split(","):
        text = part.strip()
        if not text:
            continue
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise _invalid(f"CLIP_ALLOW_PORTS entry {text!r} is not a port number (1-65535)")
        if int(text) not in ports:
            ports.append(int(text))
    return tuple(ports)


def _presigned_url(env: Mapping[str, str], name: str) -> str | None:
    url = env.get(name, "").strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        # Never echo the URL: its query string is a credential.
        raise _invalid(f"{name} must be an http(s) URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise _invalid(f"{name} has an invalid port") from None
    return url


def parse_upload_headers(raw: str) -> dict[str, str]:
    """CLIP_UPLOAD_HEADERS: a JSON object of header name -> value (the signed headers)."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise _invalid(
            "CLIP_UPLOAD_HEADERS must be a JSON object of header names to values"
        ) from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and "\n" not in k + v and "\r" not in k + v
        for k, v in value.items()
    ):
        raise _invalid("CLIP_UPLOAD_HEADERS must be a JSON object of header names to string values")
    return dict(value)


def check_source_url(url: str) -> None:
    """Only http(s) URLs with a host; everything else (file:, ftp:, data:) is refused."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise _invalid(
            f"CLIP_SOURCE_URL must be an http(s) URL, got scheme {parts.scheme or 'none'!r}"
        )
    if not parts.hostname:
        raise _invalid(f"CLIP_SOURCE_URL has no host: {url!r}")


def check_clip_window(start: float, end: float, max_clip_seconds: float) -> None:
    """End after start, and the clip no longer than the limit."""
    if end <= start:
        raise _invalid(f"CLIP_END ({end:g}) must be after CLIP_START ({start:g})")
    if end - start > max_clip_seconds:
        raise WorkerError(
            Reason.CLIP_TOO_LONG,
            f"clip is {end - start:g} s, longer than the limit of {max_clip_seconds:g} s "
            "(CLIP_MAX_CLIP_SECONDS); request a shorter segment",
        )


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in choices:
        raise _invalid(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise _invalid(f"{name} is required")
    return value


def load(env: Mapping[str, str]) -> Config:
    """Read and validate the environment; raises WorkerError(InvalidInput/ClipTooLong)."""
    url = _required(env, "CLIP_SOURCE_URL")
    check_source_url(url)
    start = parse_seconds("CLIP_START", _required(env, "CLIP_START"))
    end = parse_seconds("CLIP_END", _required(env, "CLIP_END"))
    max_clip = _positive_number(env, "CLIP_MAX_CLIP_SECONDS", DEFAULT_MAX_CLIP_SECONDS)
    check_clip_window(start, end, max_clip)
    endpoint = env.get("CLIP_S3_ENDPOINT", "").strip() or None
    style_default = "path" if endpoint else "auto"
    max_bytes = _positive_int(env, "CLIP_MAX_OUTPUT_BYTES") or DEFAULT_MAX_OUTPUT_BYTES
    upload_url = _presigned_url(env, "CLIP_UPLOAD_URL")
    result_url = _presigned_url(env, "CLIP_RESULT_URL")
    if result_url and not upload_url:
        raise _invalid("CLIP_RESULT_URL is set without CLIP_UPLOAD_URL")
    fmt = _choice(env, "CLIP_OUTPUT_FORMAT", OUTPUT_FORMATS, "mp4")
    captions, crop, loudness = options.captions(env), options.crop(env), options.loudness(env)
    if fmt == "mp3" and (captions or crop):
        raise _invalid("captions and crop need video: output format mp3 has none")
    if fmt == "gif" and loudness:
        raise _invalid("loudness needs audio: output format gif has none")
    thumbnail = options.thumbnail(env, _required(env, "CLIP_S3_KEY"), end - start)
    watermark = options.watermark(env)
    subtitles = options.subtitles(env)
    if subtitles and fmt == "mp3":
        raise _invalid("subtitles need video: output format mp3 has none")
    if watermark and fmt == "mp3":
        raise _invalid("a watermark needs video: output format mp3 has none")
    if thumbnail and fmt == "mp3":
        raise _invalid("a thumbnail needs video: output format mp3 has none")
    if thumbnail and upload_url and not thumbnail.upload_url:
        raise _invalid("CLIP_THUMBNAIL_URL is required with CLIP_UPLOAD_URL (presigned uploads)")
    if thumbnail and thumbnail.upload_url:
        _presigned_url(env, "CLIP_THUMBNAIL_URL")
    return Config(
        source_url=url,
        start=start,
        end=end,
        output_format=fmt,
        mode=_choice(env, "CLIP_MODE", MODES, "accurate"),
        s3_bucket=_required(env, "CLIP_S3_BUCKET"),
        s3_key=_required(env, "CLIP_S3_KEY"),
        source_format=env.get("CLIP_SOURCE_FORMAT", "").strip() or None,
        max_height=_positive_int(env, "CLIP_MAX_HEIGHT"),
        max_clip_seconds=max_clip,
        max_output_bytes=max_bytes,
        max_scratch_bytes=_positive_int(env, "CLIP_MAX_SCRATCH_BYTES") or 2 * max_bytes,
        network_timeout=_positive_number(
            env, "CLIP_NETWORK_TIMEOUT_SECONDS", DEFAULT_NETWORK_TIMEOUT
        ),
        process_timeout=_positive_number(
            env, "CLIP_PROCESS_TIMEOUT_SECONDS", DEFAULT_PROCESS_TIMEOUT
        ),
        allow_private_networks=parse_networks(env.get("CLIP_ALLOW_PRIVATE_NETWORKS", "")),
        work_dir=env.get("CLIP_WORK_DIR", "").strip() or "/scratch",
        termination_log=env.get("CLIP_TERMINATION_LOG", "").strip() or "/dev/termination-log",
        output_filename=env.get("CLIP_OUTPUT_FILENAME", "").strip() or None,
        s3_endpoint=endpoint,
        s3_region=env.get("CLIP_S3_REGION", "").strip() or "us-east-1",
        s3_addressing_style=_choice(
            env, "CLIP_S3_ADDRESSING_STYLE", ADDRESSING_STYLES, style_default
        ),
        allow_ports=parse_ports(env.get("CLIP_ALLOW_PORTS", "")),
        upload_url=upload_url,
        upload_headers=parse_upload_headers(env.get("CLIP_UPLOAD_HEADERS", "")),
        result_url=result_url,
        captions=captions,
        crop=crop,
        loudness=loudness,
        thumbnail=thumbnail,
        watermark=watermark,
        subtitles=subtitles,
    )
