"""Failure reasons, exit codes and the compact JSON result written to the termination log."""

from __future__ import annotations

import json
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any

# Kubernetes keeps at most 4096 bytes of a termination message; stay well below.
MAX_RESULT_BYTES = 4000


class Reason(StrEnum):
    """The `reason` values of the contract (job-image/README.md)."""

    INVALID_INPUT = "InvalidInput"
    UNSUPPORTED_SOURCE = "UnsupportedSource"
    FORBIDDEN_ADDRESS = "ForbiddenAddress"
    CLIP_TOO_LONG = "ClipTooLong"
    OUTPUT_TOO_LARGE = "OutputTooLarge"
    START_BEYOND_END = "StartBeyondEnd"
    SOURCE_NOT_FOUND = "SourceNotFound"
    SOURCE_FORBIDDEN = "SourceForbidden"
    STORAGE_AUTH_FAILED = "StorageAuthFailed"
    STORAGE_BUCKET_NOT_FOUND = "StorageBucketNotFound"
    NETWORK_ERROR = "NetworkError"
    STORAGE_UNAVAILABLE = "StorageUnavailable"
    TIMEOUT = "Timeout"
    INTERNAL_ERROR = "InternalError"
    TERMINATED = "Terminated"


EXIT_OK = 0
EXIT_TRANSIENT = 1
EXIT_INVALID = 2
EXIT_GONE = 3

_EXIT_CODES: dict[Reason, int] = {
    Reason.INVALID_INPUT: EXIT_INVALID,
    Reason.UNSUPPORTED_SOURCE: EXIT_INVALID,
    Reason.FORBIDDEN_ADDRESS: EXIT_INVALID,
    Reason.CLIP_TOO_LONG: EXIT_INVALID,
    Reason.OUTPUT_TOO_LARGE: EXIT_INVALID,
    Reason.START_BEYOND_END: EXIT_INVALID,
    Reason.STORAGE_AUTH_FAILED: EXIT_INVALID,
    Reason.STORAGE_BUCKET_NOT_FOUND: EXIT_INVALID,
    Reason.SOURCE_NOT_FOUND: EXIT_GONE,
    Reason.SOURCE_FORBIDDEN: EXIT_GONE,
    Reason.NETWORK_ERROR: EXIT_TRANSIENT,
    Reason.STORAGE_UNAVAILABLE: EXIT_TRANSIENT,
    Reason.TIMEOUT: EXIT_TRANSIENT,
    Reason.INTERNAL_ERROR: EXIT_TRANSIENT,
    # SIGTERM (eviction, node drain, Job deletion): another Pod may finish the clip.
    Reason.TERMINATED: EXIT_TRANSIENT,
}


def exit_code_for(reason: Reason) -> int:
    """The process exit code the Job's podFailurePolicy keys on."""
    return _EXIT_CODES[reason]


class WorkerError(Exception):
    """A failure with a contract reason and a message a user can act on."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.reason)


# The worker's own scratch files, as FFmpeg names them in its errors: a user cannot act on
# them, so messages say what they are instead.
_SCRATCH_FILES = (
    (re.compile(r"segment\.mkv"), "the downloaded part of the source"),
    (re.compile(r"clip\.(mp4|webm|gif|mp3)"), "the clip"),
    (re.compile(r"(part\d\.ts|audio\.m4a|parts\.ffconcat)"), "a part of the clip"),
)


def scrub(message: str, work_dir: str | None) -> str:
    """The message without scratch paths or the worker's intermediate file names."""
    if work_dir:
        message = message.replace(work_dir.rstrip("/") + "/", "")
        message = message.replace(work_dir.rstrip("/"), "the scratch directory")
    message = re.sub(r"\S*/clip-[A-Za-z0-9_]+/", "", message)
    for pattern, words in _SCRATCH_FILES:
        message = pattern.sub(words, message)
    return message


def _compact(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def failure_json(reason: Reason, message: str, limit: int = MAX_RESULT_BYTES) -> str:
    """The failure object, its message shortened so the UTF-8 JSON stays under `limit` bytes."""
    text = _compact({"reason": reason.value, "message": message})
    if len(text.encode()) <= limit:
        return text
    # Shrink the message until the encoded object fits (JSON escaping can grow it).
    keep = len(message)
    for _ in range(64):
        keep = max(0, keep - (len(text.encode()) - limit) - 16)
        text = _compact({"reason": reason.value, "message": message[:keep] + "…"})
        if len(text.encode()) <= limit or keep == 0:
            break
    return text


def success_json(result: dict[str, Any], limit: int = MAX_RESULT_BYTES) -> str:
    """The success object; raises if it would not fit (it is a fixed set of short fields)."""
    text = _compact(result)
    if len(text.encode()) > limit:
        raise ValueError(f"result JSON is {len(text.encode())} bytes, over {limit}")
    return text


def write_termination_log(path: str, text: str) -> None:
    """Write the result where Kubernetes reads the termination message; never raise."""
    try:
        target = Path(path)
        if target.parent and not target.parent.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            if not target.is_char_device():
                os.fsync(handle.fileno())
    except OSError:
        pass
