"""Clip timestamps: seconds ("65.5") or [HH:]MM:SS[.mmm] ("1:05.5", "01:02:03.250").

The same grammar is enforced at admission by the CRD's pattern; this parser is the
operator's (and the tests') single definition of what a timestamp means.
"""

from __future__ import annotations

import re

# Keep in sync with crds/clipjob.yaml (a unit test compares them).
TIMESTAMP_PATTERN = (
    r"^([0-9]{1,6}([.][0-9]{1,6})?|([0-9]{1,3}:)?[0-5]?[0-9]:[0-5][0-9]([.][0-9]{1,6})?)$"
)
_TIMESTAMP_RE = re.compile(TIMESTAMP_PATTERN)


class TimestampError(ValueError):
    """A timestamp that does not follow the documented grammar."""


def parse_timestamp(value: str) -> float:
    """Return the timestamp in seconds; raise TimestampError with a helpful message."""
    text = value.strip() if isinstance(value, str) else value
    if not isinstance(text, str) or not _TIMESTAMP_RE.match(text):
        raise TimestampError(
            f"invalid timestamp {value!r}: use seconds (e.g. '65.5') or [HH:]MM:SS[.mmm] "
            "(e.g. '1:05.5' or '01:02:03.250') with minutes and seconds below 60"
        )
    parts = text.split(":")
    seconds = float(parts[-1])
    if len(parts) >= 2:
        seconds += int(parts[-2]) * 60
    if len(parts) == 3:
        seconds += int(parts[0]) * 3600
    return round(seconds, 6)


def format_seconds(seconds: float) -> str:
    """Canonical decimal form passed to the worker ("65.5", "10")."""
    text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return text or "0"
