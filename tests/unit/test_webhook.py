"""Webhook delivery against an in-process HTTP server on 127.0.0.1: the address guard,
redirects, rejections, time limits and how often the controller is told. The real operator
against the real control plane: tests/integration/test_notifications.py."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from kubernetes.client.exceptions import ApiException

from clip_operator.config import OperatorConfig
from clip_operator.notify import Delivery
from clip_operator.plan import Facts
from clip_operator.webhook import AddressRefused, Notifier, _PinnedResolver, checked_addresses


class Kube:
    def __init__(self, secrets: dict[str, dict[str, str]] | None = None, error: int = 0) -> None:
        self.secrets, self.error = secrets or {}, error

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        if self.error:
            raise ApiException(status=self.error, reason="Forbidden")
        if name not in self.secrets:
            raise ApiException(status=404, reason="NotFound")
        return self.secrets[name]


def clipjob(url: str, secret: str | None = None) -> dict[str, Any]:
    notify: dict[str, Any] = {"url": url}
    if secret:
        notify["secretRef"] = {"name": secret}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"name": "a", "namespace": "ns", "uid": "u1"},
        "spec": {"notify": notify},
        "status": {"phase": "Failed", "reason": "X", "message": "y", "completionTime": now},
    }


def config(**kw: Any) -> OperatorConfig:
    settings: dict[str, Any] = {
        "notify_allowed_hosts": ["127.0.0.1/32"],
        "notify_retry_seconds": 1.5,
        "notify_timeout_seconds": 0.5,
        "notify_connect_timeout_seconds": 0.5,
    }
    return OperatorConfig(**{**settings, **kw})


async def deliver(cj: dict[str, Any], kube: Kube, cfg: OperatorConfig) -> list[Delivery]:
    """Run one delivery; every outcome the controller would have been told, in order."""
    told: list[Delivery] = []
    done = asyncio.Event()
    notifier: Notifier

    def on_done(uid: str) -> None:
        facts = Facts()
        assert notifier.step(cj, facts) and facts.notification is not None
        told.append(facts.notification)
        notifier.settle(uid, facts.notification)
        if facts.notification.final:
            done.set()

    notifier = Notifier(kube, cfg, on_done)  # type: ignore[arg-type]
    assert not notifier.step(cj, Facts())
    await asyncio.wait_for(done.wait(), timeout=10)
    await notifier.close()
    return told


async def server(codes: list[int]) -> tuple[web.AppRunner, str, list[str]]:
    paths: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        paths.append(request.path)
        code = codes[min(len(paths), len(codes)) - 1]
        headers = {"Location": "/elsewhere"} if 300 <= code < 400 else {}
        return web.Response(status=code, text="nope" if code >= 300 else "ok", headers=headers)

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/hook", paths


# -- the address guard ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, hosts, nets, trusted, ok",
    [
        ("http://169.254.169.254/latest", set(), ["0.0.0.0/0"], False, False),
        ("http://169.254.169.254/latest", set(), [], True, False),  # never, even trusted
        ("http://[fd00:ec2::254]/", set(), ["::/0"], False, False),
        ("http://10.1.2.3/", set(), [], False, False),
        ("http://10.1.2.3/", set(), ["10.0.0.0/8"], False, True),
        ("http://127.0.0.2:8080/", set(), ["127.0.0.1/32"], False, False),
        ("http://localhost:8080/", set(), [], False, False),
        ("http://localhost:8080/", {"localhost"}, [], False, True),
        ("http://localhost:8080/", set(), [], True, True),
        ("https://93.184.216.34/", set(), [], False, True),
        ("http://[64:ff9b::a9fe:a9fe]/", set(), [], False, False),  # NAT64 of the metadata IP
        ("http://[64:ff9b::a01:203]/", set(), [], False, False),  # NAT64 of 10.1.2.3
        ("http://[2002:a9fe:a9fe::1]/", set(), [], False, False),  # 6to4
        ("http://[2002:5db8:d822::1]/", set(), [], False, True),  # 6to4 of a public address
    ],
)
def test_address_guard(url: str, hosts: set[str], nets: list[str], trusted: bool, ok: bool) -> None:
    import ipaddress

    networks = [ipaddress.ip_network(n) for n in nets]

    async def check() -> None:
        await checked_addresses(url, hosts, networks, trusted, 2.0)

    if ok:
        asyncio.run(check())
    else:
        with pytest.raises(AddressRefused, match="NOTIFY_ALLOWED_HOSTS"):
            asyncio.run(check())


def test_the_connection_goes_only_to_checked_addresses() -> None:
    async def main() -> None:
        resolver = _PinnedResolver()
        with pytest.raises(OSError, match="not checked"):
            await resolver.resolve("rebind.example.com", 80)
        resolver.pins["rebind.example.com"] = ["203.0.113.7"]
        found = await resolver.resolve("rebind.example.com.", 80)
        assert [r["host"] for r in found] == ["203.0.113.7"]

    asyncio.run(main())


# -- deliveries ----------------------------------------------------------------------------


def test_retries_are_reported_once_then_the_end() -> None:
    async def main() -> None:
        runner, url, paths = await server([500, 500, 200])
        try:
            told = await deliver(clipjob(url), Kube(), config(notify_retry_seconds=30))
        finally:
            await runner.cleanup()
        assert [t.reason for t in told] == ["Retrying", "Delivered"]
        assert told[-1].attempts == 3 and told[-1].response_code == 200 and len(paths) == 3

    asyncio.run(main())


@pytest.mark.parametrize("code", [302, 404, 400])
def test_redirects_and_client_errors_are_not_retried(code: int) -> None:
    async def main() -> None:
        runner, url, paths = await server([code, 200])
        try:
            told = await deliver(clipjob(url), Kube(), config())
        finally:
            await runner.cleanup()
        assert [t.reason for t in told] == ["Rejected"]
        assert told[0].attempts == 1 and told[0].response_code == code
        assert paths == ["/hook"]  # the redirect target was never requested
        assert ("redirects are not followed" in told[0].message) == (code == 302)

    asyncio.run(main())


def test_a_receiver_that_never_answers_times_out_and_is_given_up() -> None:
    async def main() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)  # accepts (the kernel does), never answers
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
        try:
            told = await deliver(clipjob(url), Kube(), config(notify_retry_seconds=1))
        finally:
            sock.close()
        assert [t.reason for t in told][-1] == "GaveUp"
        assert told[-1].attempts >= 1 and "Timeout" in told[-1].message

    asyncio.run(main())


@pytest.mark.parametrize(
    "kube, reason, words",
    [
        (Kube(error=403), "SecretForbidden", "rbac.tenantSecretNamespaces"),
        (Kube(), "SecretNotFound", "does not exist in namespace ns"),
        (Kube({"k": {"other": "x"}}), "SecretKeyMissing", "no key 'signingKey'"),
    ],
)
def test_secret_problems_end_the_delivery_before_anything_is_sent(
    kube: Kube, reason: str, words: str
) -> None:
    async def main() -> None:
        runner, url, paths = await server([200])
        try:
            told = await deliver(clipjob(url, secret="k"), kube, config())
        finally:
            await runner.cleanup()
        assert [t.reason for t in told] == [reason] and words in told[0].message
        assert paths == []

    asyncio.run(main())


def test_at_most_four_requests_at_once_per_host() -> None:
    async def main() -> None:
        state = {"now": 0, "peak": 0}
        release = asyncio.Event()

        async def slow(request: web.Request) -> web.Response:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            await release.wait()
            state["now"] -= 1
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", slow)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ended: list[str] = []
        notifier = Notifier(Kube(), config(notify_timeout_seconds=10), ended.append)  # type: ignore[arg-type]
        for i in range(10):
            cj = clipjob(f"http://127.0.0.1:{port}/hook")
            cj["metadata"]["uid"] = f"u{i}"
            assert not notifier.step(cj, Facts())
        for _ in range(100):  # until the first four wait in the receiver
            if state["now"] == 4:
                break
            await asyncio.sleep(0.02)
        assert state["now"] == 4 and notifier.running() == 10
        release.set()
        for _ in range(250):
            if len(ended) == 10:
                break
            await asyncio.sleep(0.02)
        await notifier.close()
        await runner.cleanup()
        assert len(ended) == 10 and state["peak"] == 4

    asyncio.run(main())


def test_https_certificates_are_verified(tmp_path: Any) -> None:
    """A receiver with a self-signed certificate is not trusted: no event is handed over."""
    import datetime as dt
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")

    async def main() -> None:
        paths: list[str] = []

        async def hook(request: web.Request) -> web.Response:
            paths.append(request.path)
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            told = await deliver(clipjob(f"https://127.0.0.1:{port}/hook"), Kube(), config())
        finally:
            await runner.cleanup()
        assert told[-1].reason == "GaveUp" and "certificate" in told[-1].message.lower()
        assert paths == []

    asyncio.run(main())
