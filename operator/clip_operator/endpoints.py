"""Which S3 endpoints a tenant may name, and the address check before we contact one.

A tenant's `spec.storage.endpoint` is contacted by the operator (presigning is offline,
but reading results and deleting objects are requests) and by the worker (the upload).
It must be on the operator's allow-list, and its host must not resolve into link-local
or metadata addresses, nor into private ones unless the operator allows those networks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
# Never reachable through a tenant's endpoint, whatever the allow-list says.
ALWAYS_FORBIDDEN = [
    ipaddress.ip_network(n)
    for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "0.0.0.0/8", "::/128")
]


class EndpointRefused(ValueError):
    """The endpoint is not allowed; the message names the setting to change."""


def normalise(url: str) -> str:
    """scheme://host:port in lower case, the form the allow-list is compared in."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise EndpointRefused(f"S3 endpoint {url!r} is not an http(s) URL with a host")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise EndpointRefused(f"S3 endpoint {url!r} has an invalid port") from None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def check_allowed(endpoint: str, allowed: list[str], default: str | None) -> None:
    """Raise EndpointRefused unless `endpoint` is the default or on the allow-list."""
    wanted = normalise(endpoint)
    permitted = {normalise(e) for e in allowed}
    if default:
        permitted.add(normalise(default))
    if wanted not in permitted:
        listed = ", ".join(sorted(permitted)) or "none"
        raise EndpointRefused(
            f"spec.storage.endpoint {endpoint!r} is not an allowed S3 endpoint; the operator "
            f"allows: {listed} (CLIP_OPERATOR_S3_ALLOWED_ENDPOINTS / Helm value "
            "storage.allowedEndpoints)"
        )


NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _forbidden(addr: str, private_ok: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Refused: the address itself, or the IPv4 inside a NAT64, 6to4 or Teredo address
    (2002:a9fe:a9fe::1 reaches 169.254.169.254 through a 6to4 relay)."""
    if _forbidden_one(addr, private_ok):
        return True
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if not isinstance(ip, ipaddress.IPv6Address):
        return False
    inner = [ip.sixtofour, ip.teredo[1] if ip.teredo else None]
    if ip in NAT64:
        inner.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return any(v4 is not None and _forbidden_one(str(v4), private_ok) for v4 in inner)


def _forbidden_one(
    addr: str, private_ok: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in ALWAYS_FORBIDDEN):
        return True
    if ip.is_multicast or ip.is_unspecified:
        return True
    if ip.is_private or ip.is_loopback or ip.is_reserved:
        return not any(ip in net for net in private_ok)
    return False


async def check_address(endpoint: str, allow_private: list[str], timeout: float = 5.0) -> None:
    """Resolve the endpoint's host (bounded) and refuse forbidden addresses."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    nets = [ipaddress.ip_network(c, strict=False) for c in allow_private]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM), timeout
        )
    except (OSError, TimeoutError) as exc:
        raise EndpointRefused(f"S3 endpoint host {host!r} does not resolve ({exc})") from None
    for info in infos:
        addr = str(info[4][0])
        if _forbidden(addr, nets):
            raise EndpointRefused(
                f"S3 endpoint {endpoint!r} resolves to {addr}, a private, link-local or "
                "metadata address the operator does not allow "
                "(CLIP_OPERATOR_ALLOW_PRIVATE_NETWORKS)"
            )
