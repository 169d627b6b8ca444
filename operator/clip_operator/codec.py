"""JSON to and from the API server, with orjson: 3-4x faster than the standard library to
parse (measured on watch events in bench/operator)."""

from __future__ import annotations

from typing import Any

import orjson


def loads(data: bytes | str) -> Any:
    """Parse one JSON document."""
    return orjson.loads(data)


def dumps(value: Any) -> bytes:
    """Serialise compactly as UTF-8 (non-ASCII kept as is, like the API server's own)."""
    return orjson.dumps(value)
