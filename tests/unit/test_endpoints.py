"""The S3 endpoint address guard: the IPv4 inside NAT64, 6to4 and Teredo addresses counts."""

from __future__ import annotations

import asyncio

import pytest

from clip_operator.endpoints import EndpointRefused, check_address


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "[2002:a9fe:a9fe::1]",  # 6to4 wrapping 169.254.169.254
        "[64:ff9b::a9fe:a9fe]",  # NAT64 wrapping 169.254.169.254
        "[2001:0:4136:e378:8000:63bf:5601:5601]",  # Teredo, client 169.254.169.254
        "[2002:7f00:1::1]",  # 6to4 wrapping 127.0.0.1
        "[::ffff:10.0.0.1]",
    ],
)
def test_metadata_and_private_addresses_are_refused_however_wrapped(host: str) -> None:
    with pytest.raises(EndpointRefused, match="resolves to"):
        asyncio.run(check_address(f"http://{host}:9000", []))


def test_public_addresses_pass_also_when_wrapped() -> None:
    asyncio.run(check_address("http://8.8.8.8:9000", []))
    asyncio.run(check_address("http://[2002:808:808::1]:9000", []))  # 6to4 of 8.8.8.8


def test_an_allowed_private_network_passes() -> None:
    asyncio.run(check_address("http://[2002:a00:1::1]:9000", ["10.0.0.0/8"]))
