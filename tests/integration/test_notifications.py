"""Webhook notifications from a real operator run on the real control plane.

A local HTTP server on 127.0.0.1 (allowed by CLIP_OPERATOR_NOTIFY_ALLOWED_HOSTS in these
tests) receives the CloudEvent and checks its signature with the Secret's key, written
here independently of the operator's code. A trap listener on 127.0.0.2 (not allowed)
must never see a connection.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from tests.clipjobs import create, events_for, get, manifest, wait_for, wait_phase
from tests.integration.test_chart import token_kubeconfig
from tests.integration.test_rbac import install_rbac  # noqa: F401 (a fixture)
from tests.kubelet_sim import run_pod, success_message, wait_for_pod

pytestmark = pytest.mark.integration
KEY = "s3cr3t-signing-key"
ALLOWED = "127.0.0.1/32"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """Answers each POST with the next scripted status code (the last one repeats)."""

    codes: list[int]
    got: list[Received] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/clips?token=abc"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(codes=[200])
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                state.got.append(Received(dict(self.headers.items()), body, time.time()))
                code = state.codes[min(len(state.got), len(state.codes)) - 1]
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def trap() -> Iterator[tuple[int, list[str]]]:
    """A listener on 127.0.0.2 that records every connection it accepts."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.2", 0))
    except OSError as exc:
        pytest.skip(f"127.0.0.2 is not bindable here ({exc}); Linux loopback provides it")
    sock.listen(8)
    sock.settimeout(0.2)
    seen: list[str] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, addr = sock.accept()
            except OSError:
                continue
            seen.append(str(addr))
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1], seen
    stop.set()
    thread.join(timeout=2)
    sock.close()


def signing_secret(kube: Any, namespace: str, name: str = "hook-key") -> None:
    kube.core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data={"signingKey": KEY}),
    )


def verify(got: Received) -> dict[str, Any]:
    """The receiver's recipe from the README: HMAC-SHA256 over "<timestamp>.<body>"."""
    stamp = got.headers["X-Clip-Timestamp"]
    assert abs(time.time() - int(stamp)) < 300, "stale timestamp"
    expected = hmac.new(KEY.encode(), stamp.encode() + b"." + got.body, hashlib.sha256)
    assert hmac.compare_digest(got.headers["X-Clip-Signature"], "sha256=" + expected.hexdigest())
    assert got.headers["Content-Type"] == "application/cloudevents+json"
    return dict(json.loads(got.body))


def notification(kube: Any, namespace: str, name: str, final: bool = True) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        note = (get(kube, namespace, name).get("status") or {}).get("notification")
        if note and (not final or note.get("reason") != "Retrying"):
            return dict(note)
        return None

    return wait_for(f"status.notification of {name}", check, timeout=60)


def failing(name: str, **spec: Any) -> dict[str, Any]:
    """A ClipJob that fails at once (no bucket anywhere: InvalidSpec), no Pod needed."""
    return manifest(name, **spec)


def metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.split()[-1])
    return 0.0


def test_succeeded_clipjob_posts_a_signed_cloudevent(
    kube: Any, namespace: str, operator_factory: Any, receiver: Receiver
) -> None:
    signing_secret(kube, namespace)
    op = operator_factory(notify_allowed_hosts=ALLOWED)
    notify = {"url": receiver.url, "secretRef": {"name": "hook-key"}}
    cj = create(kube, namespace, manifest("told", notify=notify, urlExpiresSeconds=600))
    job = wait_for("Job", lambda: kube.batch.list_namespaced_job(namespace).items)[0]
    pod = wait_for_pod(kube, namespace, job.metadata.name)
    result = success_message(pod, size=11)
    finished = time.time()
    run_pod(kube, pod, 0, result)
    got = wait_for("the webhook", lambda: receiver.got, timeout=60)
    latency = got[0].at - finished
    print(f"webhook received {latency:.2f} s after the Pod finished")
    event = verify(got[0])
    obj = wait_phase(kube, namespace, "told", "Succeeded")
    status = obj["status"]
    assert event["specversion"] == "1.0"
    assert event["id"] == f"{cj['metadata']['uid']}.succeeded"
    assert event["source"] == f"/apis/mememaker.io/v1alpha1/namespaces/{namespace}/clipjobs/told"
    assert event["type"] == "io.mememaker.clipjob.succeeded"
    assert event["subject"] == "told" and event["datacontenttype"] == "application/json"
    assert event["time"] == status["completionTime"]
    data = event["data"]
    assert data["phase"] == "Succeeded" and data["output"]["key"] == result["key"]
    assert data["url"] == status["url"] and data["urlExpiresAt"] == status["urlExpiresAt"]
    note = notification(kube, namespace, "told")
    assert note["delivered"] is True and note["attempts"] == 1 and note["responseCode"] == 200
    assert note["phase"] == "Succeeded" and note["lastAttemptAt"]
    assert "token" not in note["message"] and "/hooks" not in note["message"]
    wait_for(
        "NotificationDelivered event",
        lambda: [
            e for e in events_for(kube, namespace, "told") if e.reason == "NotificationDelivered"
        ],
    )
    text = op.metrics()
    assert metric(text, 'clip_notifications_total{result="delivered"}') == 1
    assert metric(text, "clip_notification_delivery_seconds_count") == 1
    assert len(receiver.got) == 1 and latency < 10


def test_receiver_errors_are_retried_until_delivered_and_never_resent(
    kube: Any, namespace: str, operator_factory: Any, receiver: Receiver
) -> None:
    receiver.codes = [500, 500, 200]
    signing_secret(kube, namespace)
    op = operator_factory(s3_bucket="", notify_allowed_hosts=ALLOWED)
    notify = {"url": receiver.url, "secretRef": {"name": "hook-key"}}
    cj = create(kube, namespace, failing("bad", notify=notify))
    note = notification(kube, namespace, "bad")
    assert note == {
        **note,
        "delivered": True,
        "attempts": 3,
        "phase": "Failed",
        "reason": "Delivered",
    }
    assert len(receiver.got) == 3
    events = [verify(g) for g in receiver.got]
    assert {e["id"] for e in events} == {f"{cj['metadata']['uid']}.failed"}  # one id: dedupe
    assert {g.body for g in receiver.got} == {receiver.got[0].body}
    assert events[0]["type"] == "io.mememaker.clipjob.failed"
    assert events[0]["data"]["reason"] == "InvalidSpec" and "url" not in events[0]["data"]
    # Failed, then Retrying once and Delivered once: not one status write per attempt.
    assert metric(op.metrics(), "clip_operator_status_writes_total") == 3
    # A restarted operator reconciles it again and sends nothing more.
    op.restart()
    wait_for(
        "a reconcile after the restart",
        lambda: (
            metric(
                op.metrics(), 'clip_operator_reconcile_total{handler="reconcile",result="success"}'
            )
            >= 1
        ),
    )
    assert len(receiver.got) == 3


def test_a_receiver_that_always_fails_is_given_up_after_the_retry_time(
    kube: Any, namespace: str, operator_factory: Any, receiver: Receiver
) -> None:
    receiver.codes = [503]
    op = operator_factory(s3_bucket="", notify_allowed_hosts=ALLOWED, notify_retry_seconds=4)
    create(kube, namespace, failing("down", notify={"url": receiver.url}))
    retrying = notification(kube, namespace, "down", final=False)
    assert retrying["delivered"] is False
    note = notification(kube, namespace, "down")
    assert note["delivered"] is False and note["reason"] == "GaveUp"
    assert note["responseCode"] == 503 and note["attempts"] >= 2
    assert "HTTP 503" in note["message"] and "gave up" in note["message"]
    assert note["attempts"] == len(receiver.got)
    assert "X-Clip-Signature" not in receiver.got[0].headers  # no secretRef: unsigned
    wait_for(
        "a Warning event",
        lambda: [
            e
            for e in events_for(kube, namespace, "down")
            if e.type == "Warning" and e.reason == "NotificationGaveUp"
        ],
    )
    assert metric(op.metrics(), 'clip_notifications_total{result="gave_up"}') == 1


def test_operator_restart_mid_delivery_sends_again_until_delivered(
    kube: Any, namespace: str, operator_factory: Any, receiver: Receiver
) -> None:
    receiver.codes = [500]
    op = operator_factory(s3_bucket="", notify_allowed_hosts=ALLOWED, notify_retry_seconds=300)
    create(kube, namespace, failing("restart", notify={"url": receiver.url}))
    retrying = notification(kube, namespace, "restart", final=False)
    assert retrying["reason"] == "Retrying" and retrying["delivered"] is False
    op.kill()
    sent = len(receiver.got)
    receiver.codes = [500] * sent + [200]
    op.start()
    note = notification(kube, namespace, "restart")
    assert note["delivered"] is True and note["attempts"] >= 2
    assert len(receiver.got) == sent + 1  # sent again after the restart, once


@pytest.mark.parametrize(
    "url, refused",
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://127.0.0.2:{trap}/hook", "127.0.0.2"),
    ],
)
def test_private_and_metadata_addresses_are_refused_and_nothing_is_sent(
    kube: Any,
    namespace: str,
    operator_factory: Any,
    trap: tuple[int, list[str]],
    url: str,
    refused: str,
) -> None:
    port, seen = trap
    op = operator_factory(s3_bucket="", notify_allowed_hosts=ALLOWED)
    create(kube, namespace, failing("ssrf", notify={"url": url.format(trap=port)}))
    note = notification(kube, namespace, "ssrf")
    assert note["delivered"] is False and note["reason"] == "AddressRefused"
    assert note["attempts"] == 0 and refused in note["message"]
    assert "CLIP_OPERATOR_NOTIFY_ALLOWED_HOSTS" in note["message"]
    assert seen == []
    assert metric(op.metrics(), 'clip_notifications_total{result="refused"}') == 1


def test_a_missing_signing_secret_is_a_clear_status_and_nothing_is_sent(
    kube: Any, namespace: str, operator_factory: Any, receiver: Receiver
) -> None:
    operator_factory(s3_bucket="", notify_allowed_hosts=ALLOWED)
    notify = {"url": receiver.url, "secretRef": {"name": "nope", "key": "hmac"}}
    create(kube, namespace, failing("nosecret", notify=notify))
    note = notification(kube, namespace, "nosecret")
    assert note["delivered"] is False and note["reason"] == "SecretNotFound"
    assert "'nope'" in note["message"] and namespace in note["message"]
    assert receiver.got == []
    wait_for(
        "a Warning event",
        lambda: [
            e
            for e in events_for(kube, namespace, "nosecret")
            if e.reason == "NotificationSecretNotFound"
        ],
    )


def test_the_operator_default_webhook_signs_with_its_own_secret(
    kube: Any, namespace: str, operator_factory: Any, receiver: Receiver
) -> None:
    signing_secret(kube, namespace, "platform-hook")
    # The default webhook's host is the operator's own choice: no allow-list entry needed.
    operator_factory(
        s3_bucket="", notify_url=receiver.url, notify_secret=f"{namespace}/platform-hook"
    )
    create(kube, namespace, failing("default"))
    note = notification(kube, namespace, "default")
    assert note["delivered"] is True
    assert verify(receiver.got[0])["subject"] == "default"


def test_fifty_finished_clipjobs_cost_two_status_writes_each(
    kube: Any, namespace: str, operator_factory: Any, receiver: Receiver
) -> None:
    op = operator_factory(s3_bucket="", notify_allowed_hosts=ALLOWED)
    uids = {
        create(kube, namespace, failing(f"n{i}", notify={"url": receiver.url}))["metadata"]["uid"]
        for i in range(50)
    }
    wait_for("50 webhooks", lambda: len(receiver.got) >= 50, timeout=120)

    def delivered() -> int:
        items = kube.custom.list_namespaced_custom_object(
            "mememaker.io", "v1alpha1", namespace, "clipjobs"
        )["items"]
        return sum(
            1 for o in items if (o.get("status") or {}).get("notification", {}).get("delivered")
        )

    wait_for("50 deliveries in status", lambda: delivered() == 50, timeout=60)
    ids = [json.loads(g.body)["id"] for g in receiver.got]
    assert sorted(ids) == sorted(f"{u}.failed" for u in uids)  # each once
    text = op.metrics()
    assert metric(text, "clip_operator_status_writes_total") == 100  # Failed + Delivered
    assert metric(text, 'clip_notifications_total{result="delivered"}') == 50


@pytest.mark.parametrize(
    "notify",
    [
        {"url": "ftp://hooks.example.com/x"},
        {"url": "http://user:pw@hooks.example.com/x"},
        {"url": "http:///no-host"},
        {"url": "https://hooks.example.com/" + "a" * 2048},
        {"url": "https://hooks.example.com/x", "secretRef": {"name": "k", "key": "a b"}},
        {"secretRef": {"name": "k"}},
    ],
)
def test_admission_refuses_a_bad_webhook_with_the_field_named(
    kube: Any, namespace: str, notify: dict[str, Any]
) -> None:
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as err:
        create(kube, namespace, manifest("badhook", notify=notify))
    assert err.value.status == 422 and "spec.notify" in str(err.value.body)


def test_under_the_charts_rbac_only_granted_secrets_sign(
    kube: Any,
    namespace: str,
    operator_factory: Any,
    receiver: Receiver,
    install_rbac: Any,  # noqa: F811 (the fixture imported above)
    tmp_path: Any,
) -> None:
    """The operator under the chart's ServiceAccount (a TokenRequest token): the default
    webhook's Secret is granted by name; a tenant Secret outside rbac.tenantSecretNamespaces
    is refused by the API server, which the ClipJob's status says plainly."""
    signing_secret(kube, namespace, "platform-hook")
    signing_secret(kube, namespace, "hook-key")
    who = install_rbac({"notify.secret": "platform-hook"})
    config = token_kubeconfig(kube, namespace, who.sa, tmp_path / "operator.kubeconfig")
    operator_factory(
        env={"KUBECONFIG": str(config)},
        s3_bucket="",
        notify_url=receiver.url,
        notify_secret=f"{namespace}/platform-hook",
        notify_allowed_hosts=ALLOWED,
    )
    own = {"url": receiver.url, "secretRef": {"name": "hook-key"}}
    create(kube, namespace, failing("own", notify=own))
    create(kube, namespace, failing("platform"))
    refused = notification(kube, namespace, "own")
    assert refused["reason"] == "SecretForbidden" and refused["delivered"] is False
    assert "rbac.tenantSecretNamespaces" in refused["message"]
    delivered = notification(kube, namespace, "platform")
    assert delivered["delivered"] is True
    assert len(receiver.got) == 1 and verify(receiver.got[0])["subject"] == "platform"
