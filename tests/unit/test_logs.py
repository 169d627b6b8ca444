"""Log output: `--log-format json` (CLIP_OPERATOR_LOG_FORMAT) gives one JSON object per line,
and every line about a ClipJob names its namespace, name and uid; text stays the default.

The lines come from real reconciles (the controller with a fake API, as in
test_controller.py) run by the real work-queue worker, through the handler the operator
installs.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from clip_operator import logs, runtime
from clip_operator.config import load_config
from clip_operator.controller import Controller
from clip_operator.workqueue import serve
from tests.unit.test_controller import FakeKube, FakePresigner, clipjob


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """The operator's log handler writing into a buffer; the test's caplog set-up restored."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buf = io.StringIO()
    yield buf
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    logs.unbind_clipjob()


class FlakyKube(FakeKube):
    """The API drops the connection on the first Job create of `flaky`; a Job of `adopt`
    already exists (created by an operator killed before it recorded it)."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = False

    async def create_job(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
        name = manifest["metadata"]["name"]
        if "flaky" in name and not self.dropped:
            self.dropped = True
            raise ConnectionResetError("connection reset by peer")
        if "adopt" in name:
            owner = {"kind": "ClipJob", "controller": True, "uid": "uid-adopt"}
            self.jobs[name] = {
                **manifest,
                "metadata": {**manifest["metadata"], "ownerReferences": [owner]},
                "status": {},
            }
            raise ApiException(status=409, reason="AlreadyExists")
        return await super().create_job(namespace, manifest)


async def run_workers(ctl: Controller, until: Any, limit: float = 5.0) -> None:
    """The operator's reconcile worker (workqueue.serve with runtime's error report)."""
    worker = asyncio.create_task(serve(ctl.queue, ctl.reconcile, runtime._on_error))
    timers = asyncio.create_task(ctl.queue.run_timers())  # the retry after the back-off
    deadline = asyncio.get_running_loop().time() + limit
    try:
        while not until():
            assert asyncio.get_running_loop().time() < deadline, "reconciles did not finish"
            await asyncio.sleep(0.01)
    finally:
        worker.cancel()
        timers.cancel()
        await asyncio.gather(worker, timers, return_exceptions=True)


def reconcile_some(log_format: str, buf: io.StringIO, verbose: bool = True) -> None:
    logs.setup(log_format, verbose=verbose, stream=buf)
    config = load_config({"CLIP_OPERATOR_S3_BUCKET": "b"})
    ctl = Controller(FlakyKube(), config, FakePresigner())  # type: ignore[arg-type]
    logging.getLogger("clip_operator").info("operator started")  # about no ClipJob
    ctl.clipjob_event("ADDED", clipjob("flaky", "team-a", 1))
    ctl.clipjob_event("ADDED", clipjob("adopt", "team-b", 2))

    async def main() -> None:
        await run_workers(
            ctl, lambda: "uid-flaky" in ctl.cache.jobs and "uid-adopt" in ctl.cache.jobs
        )

    asyncio.run(main())


def test_json_every_line_is_an_object_and_clipjob_lines_name_it(output: io.StringIO) -> None:
    reconcile_some("json", output)
    lines = [json.loads(line) for line in output.getvalue().splitlines()]  # each one JSON
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)

    started = next(line for line in lines if line["message"] == "operator started")
    assert "uid" not in started and "namespace" not in started

    failed = [line for line in lines if "failed, backing off" in line["message"]]
    assert failed, lines
    assert {(f["namespace"], f["name"], f["uid"], f["kind"]) for f in failed} == {
        ("team-a", "flaky", "uid-flaky", "ClipJob")
    }
    assert failed[0]["level"] == "WARNING" and "connection reset" in failed[0]["message"]

    adopted = next(line for line in lines if line["message"].startswith("adopting existing Job"))
    assert (adopted["namespace"], adopted["name"], adopted["uid"]) == (
        "team-b",
        "adopt",
        "uid-adopt",
    )
    # Every line from a reconcile names the ClipJob being reconciled, never another one.
    for line in lines:
        if "uid" in line and line["uid"] == "uid-flaky":
            assert "adopt" not in line["message"]


def test_text_is_the_default_and_names_the_clipjob(output: io.StringIO) -> None:
    reconcile_some("text", output, verbose=False)
    text = output.getvalue()
    assert not text.lstrip().startswith("{")
    line = next(x for x in text.splitlines() if "failed, backing off" in x)
    assert " WARNING clip_operator [team-a/flaky]: reconcile of ClipJob uid uid-flaky" in line
    started = next(x for x in text.splitlines() if "operator started" in x)
    assert " INFO clip_operator: operator started" in started


def test_kopf_object_records_name_their_clipjob(output: io.StringIO) -> None:
    logs.setup("json", stream=output)
    ref = {"kind": "ClipJob", "namespace": "ns", "name": "n", "uid": "u-1", "apiVersion": "v"}
    logging.getLogger("kopf.objects").warning("Handler failed", extra={"k8s_ref": ref})
    line = json.loads(output.getvalue())
    assert (line["namespace"], line["name"], line["uid"]) == ("ns", "n", "u-1")


def test_exceptions_stay_inside_the_json_line(output: io.StringIO) -> None:
    logs.setup("json", stream=output)
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logging.getLogger("clip_operator").exception("crashed")
    (line,) = output.getvalue().splitlines()
    assert "ValueError: bad" in json.loads(line)["exception"]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clip_operator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        check=False,
    )


def test_the_setting_and_the_flag() -> None:
    proc = cli("check-config", env={"CLIP_OPERATOR_LOG_FORMAT": "json"})
    assert proc.returncode == 0 and '"log_format": "json"' in proc.stdout
    proc = cli("check-config", env={"CLIP_OPERATOR_LOG_FORMAT": "xml"})
    assert proc.returncode == 1 and "CLIP_OPERATOR_LOG_FORMAT='xml'" in proc.stderr
    proc = cli("run", "--log-format", "yaml")
    assert proc.returncode == 2 and "invalid choice: 'yaml'" in proc.stderr
    assert "--log-format" in cli("run", "--help").stdout


def test_run_in_json_reports_an_unreachable_cluster_as_json(tmp_path: Any) -> None:
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: x}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "current-context: c\n"
    )
    proc = cli("run", "--log-format", "json", env={"KUBECONFIG": str(cfg)})
    assert proc.returncode == 1
    lines = [json.loads(x) for x in proc.stderr.splitlines() if x.strip()]
    assert lines[-1]["level"] == "ERROR"
    assert "cannot reach the Kubernetes API" in lines[-1]["message"]
