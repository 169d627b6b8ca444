"""SIGTERM and SIGINT: give the Lease up first, then let kopf shut down.

kopf's own shutdown runs the cleanup handler, where the leader used to release its Lease,
only after every watcher has stopped. Closing those streams took 5.5 s in a `helm upgrade`
on the local node, and the SIGKILL that follows the grace period can leave the release out
altogether. Meanwhile the standby waited, and ClipJobs went unanswered for up to the whole
lease (12-24 s measured). So the signal goes to us: the campaign is cancelled (its
reconcilers stop, then the Lease is released, bounded), and only then does kopf's stop
flag go up. A standby takes the Lease at its next read, within about 0.5 s.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

log = logging.getLogger("clip_operator")

# The campaign's release is bounded by retry period + 2 s (leader.py); this bounds the wait.
HAND_OVER_TIMEOUT = 15.0


def install(tasks: list[asyncio.Task[Any]], stop: asyncio.Event) -> None:
    """Replace kopf's SIGTERM/SIGINT handlers (call from the startup handler, after kopf's)."""
    loop = asyncio.get_running_loop()
    campaign = next((t for t in tasks if t.get_name() == "leader-election"), None)
    pending: set[asyncio.Task[None]] = set()

    async def hand_over(sig: signal.Signals) -> None:
        if campaign is not None and not campaign.done():
            log.info("%s received: handing the Lease over, then stopping", sig.name)
            campaign.cancel()
            await asyncio.wait({campaign}, timeout=HAND_OVER_TIMEOUT)
        stop.set()  # kopf's graceful shutdown from here

    def on_signal(sig: signal.Signals) -> None:
        task = loop.create_task(hand_over(sig), name="hand-over")
        pending.add(task)
        task.add_done_callback(pending.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
