"""Progress of a long clip, for the ClipJob's status, without API credentials.

The operator gives the worker of a long clip a presigned PUT for a small object beside
the clip (CLIP_PROGRESS_URL) and reads it back while the Job runs. The worker writes
{"phase", "percent", "updatedAt"} from a background thread, at most every
CLIP_PROGRESS_EVERY seconds and only when something changed. Best effort: a failed write
is logged and never fails the clip. The percent is coarse: where the phase starts in the
whole job (Resolving 0, Downloading 5, Encoding 45, Uploading 90).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

log = logging.getLogger("clip_worker.progress")

PHASE_START = {"Resolving": 0, "Downloading": 5, "Encoding": 45, "Uploading": 90}
Put = Callable[[str, Mapping[str, str], bytes, float], None]


def _put(url: str, headers: Mapping[str, str], data: bytes, timeout: float) -> None:
    from .presigned import put

    put(url, headers, None, data, timeout)


class Reporter:
    def __init__(
        self, url: str | None, every: float = 5.0, timeout: float = 10.0, put: Put = _put
    ) -> None:
        self.url, self.every, self.timeout, self._put = url, max(1.0, every), timeout, put
        self._state: tuple[str, int] | None = None
        self._sent: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.writes = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str], timeout: float) -> Reporter:
        url = env.get("CLIP_PROGRESS_URL", "").strip() or None
        try:
            every = float(env.get("CLIP_PROGRESS_EVERY", "") or 5)
        except ValueError:
            every = 5.0
        return cls(url, every, timeout)

    def phase(self, name: str, percent: int | None = None) -> None:
        """The worker entered `name` (percent: where it is, default the phase's start)."""
        value = PHASE_START[name] if percent is None else max(0, min(100, percent))
        with self._lock:
            self._state = (name, value)
        self._wake.set()

    def start(self) -> Reporter:
        if self.url and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)

    def _run(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            pause = last + self.every - time.monotonic()
            if pause > 0 and self._stop.wait(pause):
                return
            with self._lock:
                state = self._state
            if state is None or state == self._sent:
                continue
            body = {
                "phase": state[0],
                "percent": state[1],
                "updatedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            last = time.monotonic()
            try:
                assert self.url is not None
                data = json.dumps(body).encode()
                self._put(self.url, {"Content-Type": "application/json"}, data, self.timeout)
                self._sent = state
                self.writes += 1
            except Exception as exc:  # best effort: progress never fails the clip
                log.warning("progress report failed: %s", exc)
