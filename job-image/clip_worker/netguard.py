"""Which addresses a source may resolve to: no loopback, private, link-local, metadata...

Every connection the worker's yt-dlp and FFmpeg make goes through the egress proxy
(proxy.py), which resolves the host once with `resolve_checked`, refuses it if any
address is forbidden, and connects to the address it checked (so DNS cannot change
the answer between the check and the connection).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from clip_worker.config import Network
from clip_worker.result import Reason, WorkerError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata endpoints that are not covered by the link-local range.
_METADATA = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fd00:ec2::254/128"),
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)


def forbidden_kind(address: Address) -> str | None:
    """Why this address is off limits for a source, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return forbidden_kind(address.ipv4_mapped)
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
    plain = address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        plain = address.ipv4_mapped
    return any(plain.version == net.version and plain in net for net in allow)


def resolve_checked(
    host: str, port: int, allow: Sequence[Network], timeout: float
) -> list[tuple[Address, int]]:
    """Resolve `host` and return its addresses, all of them allowed; raise otherwise."""
    literal: Address | None
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(timeout)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, OSError) as exc:
            raise WorkerError(
                Reason.NETWORK_ERROR, f"cannot resolve source host {host!r}: {exc}"
            ) from None
        finally:
            socket.setdefaulttimeout(previous)
        addresses = []
        for info in infos:
            addr = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if addr not in addresses:
                addresses.append(addr)
    if not addresses:
        raise WorkerError(Reason.NETWORK_ERROR, f"source host {host!r} has no address")
    for addr in addresses:
        if not is_allowed(addr, allow):
            raise WorkerError(
                Reason.FORBIDDEN_ADDRESS,
                f"source host {host!r} resolves to {addr} ({forbidden_kind(addr)} address); "
                "sources must be public, or the operator must allow the network "
                "(CLIP_ALLOW_PRIVATE_NETWORKS)",
            )
    return [(addr, port) for addr in addresses]
