"""Kubernetes Events on ClipJobs, posted by kopf's background poster (never blocks)."""

from __future__ import annotations

from typing import Any, cast

import kopf


def info(body: dict[str, Any], reason: str, message: str) -> None:
    kopf.info(cast(kopf.Body, body), reason=reason, message=message)


def warn(body: dict[str, Any], reason: str, message: str) -> None:
    kopf.warn(cast(kopf.Body, body), reason=reason, message=message)
