"""Running FFmpeg and ffprobe: argument lists (never a shell), a deadline, a stderr tail.

Every child runs in its own process group and is registered while it runs, so a SIGTERM
to the worker (cli.py) can stop all of them, including those started by pool threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from clip_worker.result import Reason, WorkerError

log = logging.getLogger("clip_worker")

_STDERR_TAIL = 4000
_LIVE: set[subprocess.Popen[str]] = set()
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()

# Called with each stderr line while the child runs; a non-None return value stops the
# child at once and becomes Completed.stopped.
Watcher = Callable[[str], object]


@dataclass(frozen=True)
class Completed:
    """A finished child process."""

    returncode: int
    stdout: str
    stderr: str
    stopped: object = None  # what the watcher returned when it stopped the child

    def tail(self, limit: int = 600) -> str:
        """The last meaningful stderr lines, for error messages."""
        lines = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()]
        text = " | ".join(lines[-6:])
        return text[-limit:]


def child_env(proxy_url: str | None) -> dict[str, str]:
    """The environment for FFmpeg: the egress proxy for http and https, nothing bypassing it."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "all_proxy")}
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(name, None)
        if proxy_url:
            env[name] = proxy_url
    return env


def _kill(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        proc.kill()


def stop_all(wait: float = 5.0) -> int:
    """Kill every running child (SIGTERM handling); no new child starts afterwards."""
    _STOPPING.set()
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        _kill(proc)
    deadline = time.monotonic() + wait
    for proc in live:
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    return len(live)


def _read_watched(proc: subprocess.Popen[str], watch: Watcher) -> tuple[str, object]:
    """Read stderr line by line (stdout is not used by watched children)."""
    assert proc.stderr is not None
    lines: list[str] = []
    size = 0
    stopped: object = None
    for line in proc.stderr:
        lines.append(line)
        size += len(line)
        while size > _STDERR_TAIL * 4 and len(lines) > 1:
            size -= len(lines.pop(0))
        if stopped is None:
            stopped = watch(line)
            if stopped is not None:
                _kill(proc)
    return "".join(lines), stopped


def run(
    args: list[str],
    timeout: float,
    what: str,
    proxy_url: str | None = None,
    watch: Watcher | None = None,
) -> Completed:
    """Run a child with a deadline; on expiry kill that child and raise Timeout."""
    if _STOPPING.is_set():
        raise WorkerError(Reason.TERMINATED, f"not starting {what}: the worker is stopping")
    log.debug("run %s", " ".join(args))
    began = time.monotonic()
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL if watch else subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(proxy_url),
        text=True,
        errors="replace",
        start_new_session=True,
    )
    with _LIVE_LOCK:
        _LIVE.add(proc)
    stopped: object = None
    try:
        if watch is not None:
            timer = threading.Timer(timeout, _kill, args=(proc,))
            timer.daemon = True
            timer.start()
            try:
                stderr, stopped = _read_watched(proc, watch)
                proc.wait()
            finally:
                timer.cancel()
            if not timer.is_alive() and stopped is None and time.monotonic() - began >= timeout:
                raise WorkerError(
                    Reason.TIMEOUT, f"{what} did not finish within {timeout:g} s and was stopped"
                )
            stdout = ""
        else:
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill(proc)
                proc.communicate(timeout=10)
                raise WorkerError(
                    Reason.TIMEOUT, f"{what} did not finish within {timeout:g} s and was stopped"
                ) from None
    finally:
        # Also on SIGTERM (an exception raised in this thread): never leave the child behind.
        if proc.poll() is None:
            _kill(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        with _LIVE_LOCK:
            _LIVE.discard(proc)
    log.debug("%s: exit %s after %.2f s", what, proc.returncode, time.monotonic() - began)
    return Completed(proc.returncode, stdout, stderr[-_STDERR_TAIL * 4 :], stopped)
