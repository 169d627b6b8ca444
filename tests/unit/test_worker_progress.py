"""The worker's progress reporter: at most one write per interval, only on change, never fatal."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping

from clip_worker.progress import Reporter


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.bodies: list[dict[str, object]] = []
        self.times: list[float] = []
        self.fail = fail
        self.got = threading.Event()

    def __call__(self, url: str, headers: Mapping[str, str], data: bytes, timeout: float) -> None:
        assert headers["Content-Type"] == "application/json" and url == "https://s3/p?sig"
        self.times.append(time.monotonic())
        self.got.set()
        if self.fail:
            raise OSError("S3 down")
        self.bodies.append(json.loads(data))


def wait_writes(sink: Sink, n: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while len(sink.times) < n and time.monotonic() < deadline:
        time.sleep(0.01)


def test_phases_are_written_no_more_often_than_the_interval() -> None:
    sink = Sink()
    rep = Reporter("https://s3/p?sig", every=1.0, put=sink).start()
    rep.phase("Resolving")
    wait_writes(sink, 1)
    rep.phase("Downloading")
    rep.phase("Encoding")  # both within the interval: only the latest is written
    wait_writes(sink, 2)
    rep.stop()
    assert [(b["phase"], b["percent"]) for b in sink.bodies] == [("Resolving", 0), ("Encoding", 45)]
    assert sink.times[1] - sink.times[0] >= 0.95
    assert all(isinstance(b["updatedAt"], str) for b in sink.bodies)


def test_no_url_no_thread_and_failures_are_not_fatal() -> None:
    quiet = Reporter(None).start()
    quiet.phase("Encoding")
    quiet.stop()
    assert quiet.writes == 0
    sink = Sink(fail=True)
    rep = Reporter("https://s3/p?sig", every=1.0, put=sink).start()
    rep.phase("Uploading")
    assert sink.got.wait(5)
    rep.stop()
    assert rep.writes == 0


def test_from_env_reads_the_url_and_interval() -> None:
    rep = Reporter.from_env(
        {"CLIP_PROGRESS_URL": "https://s3/p?sig", "CLIP_PROGRESS_EVERY": "7"}, 3
    )
    assert (rep.url, rep.every, rep.timeout) == ("https://s3/p?sig", 7.0, 3)
    assert Reporter.from_env({}, 3).url is None
