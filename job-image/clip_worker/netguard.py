"""Which addresses and ports a source may reach: no loopback, private, link-local, metadata...

Every connection the worker's yt-dlp and FFmpeg make goes through the egress proxy
(proxy.py), which resolves the host once with `resolve_checked`, refuses it if the port
is not allowed or any address is forbidden, and connects to the address it checked (so
DNS cannot change the answer between the check and the connection).

Every refusal carries the same message (`REFUSED`), whatever was refused and why: a
message that named the address kind or differed by outcome would let a tenant map
the cluster's DNS and networks through ClipJob status. The reason goes to the debug log.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Sequence

from clip_worker.config import Network
from clip_worker.result import Reason, WorkerError

log = logging.getLogger("clip_worker")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

REFUSED = (
    "the source, or a URL it leads to, is not allowed: the worker opens only http(s) URLs "
    "on allowed ports (80, 443, CLIP_ALLOW_PORTS) of public addresses or of networks the "
    "operator allows (CLIP_ALLOW_PRIVATE_NETWORKS)"
)

# Cloud metadata endpoints that are not covered by the link-local range.
_METADATA = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fd00:ec2::254/128"),
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
# IPv6 forms that carry an IPv4 address a gateway will connect to: the IPv4 one decides.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix, last 32 bits
_SIXTOFOUR = ipaddress.ip_network("2002::/16")  # RFC 3056, bits 16-48


class Refused(WorkerError):
    """An egress refusal: the generic message for users, the detail for the debug log."""

    def __init__(self, detail: str) -> None:
        super().__init__(Reason.FORBIDDEN_ADDRESS, REFUSED)
        self.detail = detail


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 (64:ff9b::/96) or 6to4 address reaches."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIXTOFOUR:
        return address.sixtofour
    return None


def forbidden_kind(address: Address) -> str | None:
    """Why this address is off limits for a source, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return forbidden_kind(inner)
    if any(address in net for net in _METADATA):
        return "link-local/metadata"
    checks = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_reserved, "reserved"),
        (address.is_private, "private"),
        (isinstance(address, ipaddress.IPv4Address) and address in _SHARED, "shared"),
    )
    for flag, kind in checks:
        if flag:
            return kind
    return None


def is_allowed(address: Address, allow: Sequence[Network]) -> bool:
    """Public addresses always; others only inside an allow-listed network."""
    if forbidden_kind(address) is None:
        return True
    plain: Address = address
    if isinstance(address, ipaddress.IPv6Address):
        plain = embedded_ipv4(address) or address
    return any(plain.version == net.version and plain in net for net in allow)


def lookup(host: str, port: int, timeout: float) -> list[Address]:
    """getaddrinfo bounded by `timeout` for this call only (no process-wide socket default).

    The lookup runs in its own daemon thread; when it does not answer in time the worker
    stops waiting (the thread ends on its own when the resolver gives up).
    """
    answer: list[object] = []
    done = threading.Event()

    def run() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            answer.append(exc)
        done.set()

    threading.Thread(target=run, name="dns", daemon=True).start()
    if not done.wait(timeout):
        raise WorkerError(Reason.TIMEOUT, f"looking up {host!r} took longer than {timeout:g} s")
    result = answer[0]
    if isinstance(result, BaseException):
        raise WorkerError(Reason.NETWORK_ERROR, f"cannot resolve host {host!r}: {result}")
    addresses: list[Address] = []
    for info in result:  # type: ignore[attr-defined]
        addr = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if addr not in addresses:
            addresses.append(addr)
    if not addresses:
        raise WorkerError(Reason.NETWORK_ERROR, f"host {host!r} has no address")
    return addresses


def check_port(host: str, port: int, ports: Sequence[int]) -> None:
    """Refuse a port outside the allowed list (80, 443 and CLIP_ALLOW_PORTS)."""
    if port not in ports:
        raise Refused(f"port {port} of {host!r} is not in the allowed ports {list(ports)}")


def resolve_checked(
    host: str,
    port: int,
    allow: Sequence[Network],
    timeout: float,
    ports: Sequence[int] | None = None,
) -> list[tuple[Address, int]]:
    """Resolve `host` and return its addresses, all of them allowed; raise otherwise.

    `ports`: the allowed ports (None: any, for callers that checked the port themselves).
    """
    if ports is not None:
        check_port(host, port, ports)
    literal: Address | None
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    addresses = [literal] if literal is not None else lookup(host, port, timeout)
    for addr in addresses:
        if not is_allowed(addr, allow):
            raise Refused(f"host {host!r} resolves to {addr} ({forbidden_kind(addr)} address)")
    return [(addr, port) for addr in addresses]
