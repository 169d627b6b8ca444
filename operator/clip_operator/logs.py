"""The operator's log output: plain text (default) or one JSON object per line.

Every line logged while a ClipJob is reconciled names it: Controller.reconcile binds the
ClipJob to the current asyncio task (a context variable, so tasks and threads it starts
inherit it), and the handler stamps each record with its namespace, name and uid. A
reconcile worker keeps the binding until its next key, so the failure it reports after
the reconcile names that ClipJob too.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# (namespace, name, uid) of the ClipJob being reconciled; empty strings when unknown.
_CLIPJOB: ContextVar[tuple[str, str, str] | None] = ContextVar("clipjob", default=None)


def bind_clipjob(uid: str, clipjob: dict[str, Any] | None) -> None:
    """Name this ClipJob on every log line of the current task from now on."""
    meta = (clipjob or {}).get("metadata") or {}
    _CLIPJOB.set((str(meta.get("namespace") or ""), str(meta.get("name") or ""), uid))


def unbind_clipjob() -> None:
    """Log lines of the current task name no ClipJob any more."""
    _CLIPJOB.set(None)


class ClipJobFilter(logging.Filter):
    """Copies the bound ClipJob onto each record (clipjob_namespace, _name, _uid).

    Records from kopf's per-object loggers carry the object in `k8s_ref`; a ClipJob there
    counts too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _CLIPJOB.get()
        ref = getattr(record, "k8s_ref", None)
        if bound is None and isinstance(ref, dict) and ref.get("kind") == "ClipJob":
            bound = (
                str(ref.get("namespace") or ""),
                str(ref.get("name") or ""),
                str(ref.get("uid") or ""),
            )
        if bound is not None:
            record.clipjob_namespace, record.clipjob_name, record.clipjob_uid = bound
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the ClipJob if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        uid = getattr(record, "clipjob_uid", None)
        if uid is not None:
            line["kind"] = "ClipJob"
            line["namespace"] = getattr(record, "clipjob_namespace", "")
            line["name"] = getattr(record, "clipjob_name", "")
            line["uid"] = uid
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The plain default, with `[namespace/name]` after the logger name on ClipJob lines."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        name = getattr(record, "clipjob_name", None)
        if name is None:
            return text
        namespace, uid = (
            getattr(record, "clipjob_namespace", ""),
            getattr(record, "clipjob_uid", ""),
        )
        where = f"{namespace}/{name}" if name else f"uid {uid}"
        prefix = f"{record.name}: "
        return text.replace(prefix, f"{record.name} [{where}]: ", 1)


def setup(log_format: str = "text", verbose: bool = False, stream: TextIO | None = None) -> None:
    """Configure the root logger: one handler on stderr in the chosen format."""
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r}: use one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ClipJobFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(True)  # Python warnings in the same format, not bare stderr text
    if not verbose:
        # kopf logs every handler run at INFO: at thousands of events that is most of the
        # operator's output and a measurable part of its CPU.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
