"""Running FFmpeg and ffprobe: argument lists (never a shell), a deadline, a stderr tail."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from dataclasses import dataclass

from clip_worker.result import Reason, WorkerError

log = logging.getLogger("clip_worker")

_STDERR_TAIL = 4000


@dataclass(frozen=True)
class Completed:
    """A finished child process."""

    returncode: int
    stdout: str
    stderr: str

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


def run(args: list[str], timeout: float, what: str, proxy_url: str | None = None) -> Completed:
    """Run a child with a deadline; on expiry kill that child and raise Timeout."""
    log.debug("run %s", " ".join(args))
    began = time.monotonic()
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(proxy_url),
        text=True,
        errors="replace",
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        raise WorkerError(
            Reason.TIMEOUT, f"{what} did not finish within {timeout:g} s and was stopped"
        ) from None
    log.debug("%s: exit %s after %.2f s", what, proc.returncode, time.monotonic() - began)
    return Completed(proc.returncode, stdout, stderr[-_STDERR_TAIL * 4 :])
