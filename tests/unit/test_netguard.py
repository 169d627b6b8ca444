"""The address and port guard (issue 12): embedded IPv4 forms, ports, bounded DNS, the one
refusal message, and the configuration that feeds it."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from clip_worker import config, netguard
from clip_worker.presigned import redact
from clip_worker.proxy import EgressProxy
from clip_worker.result import Reason, WorkerError


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("2002:a9fe:a9fe::1", "link-local/metadata"),  # 6to4 of 169.254.169.254
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
        ("2002:101:101::1", None),  # 6to4 of 1.1.1.1: public
        ("64:ff9b::a9fe:a9fe", "link-local/metadata"),  # NAT64 of the metadata address
        ("64:ff9b::a00:5", "private"),  # NAT64 of 10.0.0.5
        ("64:ff9b::101:101", None),  # NAT64 of 1.1.1.1: how IPv6-only clusters reach it
        ("::ffff:a9fe:a9fe", "link-local/metadata"),
        ("64:ff9b:1::a00:5", "reserved"),  # local-use NAT64 (RFC 8215): never a source
    ],
)
def test_embedded_ipv4_decides(address: str, kind: str | None) -> None:
    assert netguard.forbidden_kind(ipaddress.ip_address(address)) == kind


def test_allow_list_applies_to_the_embedded_ipv4() -> None:
    allow = config.parse_networks("10.0.0.0/8")
    assert netguard.is_allowed(ipaddress.ip_address("64:ff9b::a00:5"), allow)
    assert netguard.is_allowed(ipaddress.ip_address("2002:a00:1::"), allow)
    assert not netguard.is_allowed(ipaddress.ip_address("2002:a9fe:a9fe::1"), allow)


def test_every_refusal_has_the_same_message() -> None:
    errors = []
    for host, port in (("127.0.0.1", 80), ("169.254.169.254", 80), ("1.1.1.1", 25),
                       ("2002:a9fe:a9fe::1", 443), ("10.1.2.3", 8080)):  # fmt: skip
        with pytest.raises(netguard.Refused) as info:
            netguard.resolve_checked(host, port, (), 5, config.DEFAULT_ALLOW_PORTS)
        errors.append(info.value)
    assert {e.message for e in errors} == {netguard.REFUSED}
    assert all(e.reason is Reason.FORBIDDEN_ADDRESS for e in errors)
    assert "port 25" in errors[2].detail  # the reason stays available to the debug log


def test_dns_lookup_is_bounded_per_call_without_a_global_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A resolver that never answers costs the timeout, not forever; nobody else's sockets
    get a default timeout meanwhile (socket.setdefaulttimeout is process-wide)."""
    release = threading.Event()

    def hanging(*args: Any, **kwargs: Any) -> Any:
        release.wait(10)
        raise socket.gaierror("gave up")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    seen: list[float | None] = []
    began = time.monotonic()
    try:
        with pytest.raises(WorkerError) as info:
            threading.Timer(0.1, lambda: seen.append(socket.getdefaulttimeout())).start()
            netguard.resolve_checked("stalls.example", 80, (), 0.5, (80,))
        elapsed = time.monotonic() - began
    finally:
        release.set()
    assert info.value.reason is Reason.TIMEOUT
    assert elapsed < 2.0
    assert seen == [None]


def test_connect_to_a_port_outside_the_list_is_refused_before_connecting() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    allow = config.parse_networks("127.0.0.0/8")
    try:
        with EgressProxy(allow, timeout=5) as proxy:  # 80 and 443 only
            with socket.create_connection(("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]))) as c:
                c.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
                answer = c.recv(4096)
            assert answer.startswith(b"HTTP/1.1 403") and b"X-Clip-Refused: 1" in answer
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url}))
            with pytest.raises(urllib.error.HTTPError) as plain:
                opener.open(f"http://127.0.0.1:{port}/x", timeout=5)
            assert plain.value.code == 403
            assert proxy.log.refusals == [netguard.REFUSED] * 2
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
    finally:
        listener.close()


def test_proxy_refuses_other_schemes_in_plain_requests() -> None:
    """FFmpeg following a redirect to tcp:// asks the proxy for that URL: refused."""
    with EgressProxy((), timeout=5) as proxy:
        with socket.create_connection(("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]))) as c:
            c.sendall(b"GET tcp://127.0.0.2:6379/x HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = c.recv(4096)
        assert answer.startswith(b"HTTP/1.1 403")
        assert proxy.log.refusals == [netguard.REFUSED]


def test_pinned_documents_are_served_by_the_proxy_itself() -> None:
    with EgressProxy((), timeout=5) as proxy:
        url = proxy.pin(b"#EXTM3U\n", "application/vnd.apple.mpegurl", ".m3u8")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url}))
        with opener.open(url, timeout=5) as response:
            assert response.read() == b"#EXTM3U\n"
        with pytest.raises(urllib.error.HTTPError) as other:
            opener.open(proxy.url + "/_pinned/guessed.m3u8", timeout=5)
        assert other.value.code == 404


BASE = {"CLIP_SOURCE_URL": "https://example.com/v", "CLIP_START": "1", "CLIP_END": "2",
        "CLIP_S3_BUCKET": "b", "CLIP_S3_KEY": "k"}  # fmt: skip
SIGNED = "https://s3.example.com/b/k?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA%2Fx"


def test_config_reads_ports_and_the_presigned_contract() -> None:
    cfg = config.load({**BASE, "CLIP_ALLOW_PORTS": "8080, 9000", "CLIP_UPLOAD_URL": SIGNED,
                       "CLIP_UPLOAD_HEADERS": '{"Content-Type": "video/mp4"}',
                       "CLIP_RESULT_URL": SIGNED})  # fmt: skip
    assert cfg.allow_ports == (80, 443, 8080, 9000)
    assert cfg.presigned and cfg.upload_headers == {"Content-Type": "video/mp4"}
    assert config.load(BASE).allow_ports == (80, 443) and not config.load(BASE).presigned


@pytest.mark.parametrize(
    "env",
    [
        {"CLIP_ALLOW_PORTS": "80,http"},
        {"CLIP_ALLOW_PORTS": "70000"},
        {"CLIP_UPLOAD_URL": SIGNED.replace("https", "ftp")},
        {"CLIP_UPLOAD_URL": SIGNED, "CLIP_UPLOAD_HEADERS": "[1]"},
        {"CLIP_UPLOAD_URL": SIGNED, "CLIP_UPLOAD_HEADERS": '{"X": "a\\r\\nInjected: 1"}'},
        {"CLIP_RESULT_URL": SIGNED},
    ],
)
def test_config_rejects_bad_egress_and_upload_settings(env: dict[str, str]) -> None:
    with pytest.raises(WorkerError) as info:
        config.load({**BASE, **env})
    assert info.value.reason is Reason.INVALID_INPUT
    assert "deadbeef" not in info.value.message  # a presigned URL is never echoed


def test_redact_drops_query_and_user_info() -> None:
    assert redact(SIGNED) == "https://s3.example.com/b/k"
    assert redact("http://u:p@[::1]:9000/b/k?sig=1#f") == "http://[::1]:9000/b/k"
