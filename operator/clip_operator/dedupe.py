"""Identical requests served once: content-addressed keys and the in-flight twin index.

Two ClipJobs ask for the same clip when everything that shapes its bytes is equal: the
source, the range (in seconds, so "1:00" equals "60"), every output option, and where it
is stored (bucket and endpoint). Fields that do not change the bytes (retries, deadlines,
URL lifetime, priority, TTL, deletion policy, notifications, credentials) are left out.
The clip of such a ClipJob lives at a key derived from that digest, so a second ClipJob
finds it in S3 (its result object) and succeeds without a Job, and one still being made
is waited for instead of made twice.

Scope `Namespace` (the default) keeps each namespace's clips apart: the namespace is part
of the digest and of the key, so a tenant never learns what another one clipped.
`Cluster` shares clips between namespaces that store into the same bucket; `Off` gives
every ClipJob its own object, as before.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .builders import EXTENSIONS
from .models import ClipJobSpec

SCOPES = ("Off", "Namespace", "Cluster")
# Spec fields that do not change the clip's bytes.
NOT_CONTENT = frozenset(
    {
        "urlExpiresSeconds",
        "deadlineSeconds",
        "retries",
        "deletionPolicy",
        "priority",
        "ttlSecondsAfterFinished",
        "notify",
        "dedupe",
        "storage",
    }
)


def content_digest(
    spec: ClipJobSpec, namespace: str, scope: str, bucket: str, endpoint: str | None
) -> str:
    """sha256 over the canonical form of what shapes the clip (and where it is kept)."""
    shaped = {k: v for k, v in spec.to_kubernetes().items() if k not in NOT_CONTENT}
    shaped["start"] = round(spec.start_seconds, 6)
    shaped["end"] = round(spec.end_seconds, 6)
    shaped["@store"] = [bucket, endpoint or ""]
    if scope != "Cluster":
        shaped["@namespace"] = namespace
    text = json.dumps(shaped, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def content_key(spec: ClipJobSpec, namespace: str, scope: str, digest: str) -> str:
    """The S3 key of a content-addressed clip."""
    ext = EXTENSIONS[spec.output.format]
    if scope == "Cluster":
        return f"by-content/{digest}.{ext}"
    return f"{namespace}/by-content/{digest}.{ext}"


def older(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Is ClipJob `a` older than `b` (creation time, then name, then uid)?"""

    def rank(cj: dict[str, Any]) -> tuple[str, str, str]:
        meta = cj["metadata"]
        return (meta.get("creationTimestamp") or "", meta.get("name") or "", meta["uid"])

    return rank(a) < rank(b)


class TwinIndex:
    """Unfinished ClipJobs by content digest: who else is making this clip right now?"""

    def __init__(self) -> None:
        self.digest_of: dict[str, str] = {}
        self._by_digest: dict[str, set[str]] = {}

    def add(self, uid: str, digest: str) -> None:
        self.digest_of[uid] = digest
        self._by_digest.setdefault(digest, set()).add(uid)

    def discard(self, uid: str) -> set[str]:
        """Forget `uid` (finished or gone); returns the ClipJobs that may have waited for it."""
        digest = self.digest_of.pop(uid, None)
        if digest is None:
            return set()
        twins = self._by_digest.get(digest, set())
        twins.discard(uid)
        if not twins:
            self._by_digest.pop(digest, None)
        return set(twins)

    def twins(self, uid: str) -> set[str]:
        digest = self.digest_of.get(uid)
        return set(self._by_digest.get(digest, ())) - {uid} if digest else set()
