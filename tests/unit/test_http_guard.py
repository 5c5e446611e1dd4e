"""The SSRF guard: which addresses are public, --http-allow entries, the guarded resolver."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from engine.executors.ssrf import (
    AllowListError,
    Blocked,
    Guard,
    GuardedResolver,
    is_public,
    parse_allow_list,
)

NON_PUBLIC = [
    "127.0.0.1",
    "127.255.0.9",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "169.254.0.1",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "0.0.0.0",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",
    "198.18.0.1",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "2002:7f00:1::",  # 6to4 around 127.0.0.1
    "2001:db8::1",
    "64:ff9b::7f00:1",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2001:4860:4860::8888", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_non_public_addresses(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_allow_entries_match_ip_cidr_hostname_and_port() -> None:
    guard = Guard(parse_allow_list("127.0.0.2:8080, 10.0.0.0/8 , internal.example, [::1]:9000"))
    assert guard.permits("127.0.0.2", _ip("127.0.0.2"), 8080)
    assert not guard.permits("127.0.0.2", _ip("127.0.0.2"), 8081)  # that port only
    assert not guard.permits("127.0.0.1", _ip("127.0.0.1"), 8080)
    assert guard.permits("x", _ip("10.20.30.40"), 443)
    assert guard.permits("Internal.Example.", _ip("192.168.0.7"), 80)  # any port, any address
    assert not guard.permits("other.example", _ip("192.168.0.7"), 80)
    assert guard.permits("::1", _ip("::1"), 9000)
    assert not guard.permits("::1", _ip("::1"), 9001)
    assert guard.permits("h", _ip("::ffff:127.0.0.2"), 8080)  # mapped form of an allowed IP
    assert guard.permits("anything", _ip("8.8.8.8"), 25)  # public: always


def test_allow_entry_with_cidr_and_port() -> None:
    guard = Guard(parse_allow_list("192.168.0.0/16:443,[fd00::/8]:8443,::1"))
    assert guard.permits("h", _ip("192.168.3.4"), 443)
    assert not guard.permits("h", _ip("192.168.3.4"), 80)
    assert guard.permits("h", _ip("fd12::1"), 8443)
    assert guard.permits("h", _ip("::1"), 1)


@pytest.mark.parametrize(
    "text",
    ["127.0.0.1:0", "127.0.0.1:99999", "10.0.0.1/8", "127.1", "bad host", "[::1", "h:x", "::g"],
)
def test_bad_allow_entries(text: str) -> None:
    with pytest.raises(AllowListError, match="bad --http-allow entry"):
        parse_allow_list(text)


def test_empty_allow_list() -> None:
    assert parse_allow_list("") == () and parse_allow_list(" , ") == ()


def test_literals_are_checked_without_dns() -> None:
    guard = Guard(parse_allow_list("127.0.0.2:8080"))
    guard.check_literal("127.0.0.2", 8080)
    guard.check_literal("example.com", 80)  # a hostname: the resolver decides
    with pytest.raises(Blocked, match=r"Blocked: '169\.254\.169\.254' is a non-public address"):
        guard.check_literal("169.254.169.254", 80)
    with pytest.raises(Blocked, match="--http-allow"):
        guard.check_literal("::ffff:127.0.0.1", 80)


class FakeResolver(AbstractResolver):
    """Answers every name with fixed addresses."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_resolver_refuses_names_resolving_to_non_public_addresses() -> None:
    resolver = GuardedResolver(Guard(), FakeResolver("127.0.0.1"))
    with pytest.raises(Blocked) as caught:
        await resolver.resolve("rebind.example", 80)
    assert str(caught.value) == (
        "Blocked: 'rebind.example' resolves to a non-public address (127.0.0.1). "
        "Allow it with --http-allow."
    )


async def test_resolver_keeps_only_permitted_addresses() -> None:
    resolver = GuardedResolver(Guard(), FakeResolver("10.0.0.1", "8.8.8.8", "169.254.169.254"))
    kept = await resolver.resolve("mixed.example", 443)
    assert [r["host"] for r in kept] == ["8.8.8.8"]


async def test_resolver_honours_allow_entries() -> None:
    guard = Guard(parse_allow_list("127.0.0.1:8080,svc.internal"))
    assert await GuardedResolver(guard, FakeResolver("127.0.0.1")).resolve("localhost", 8080)
    with pytest.raises(Blocked):
        await GuardedResolver(guard, FakeResolver("127.0.0.1")).resolve("localhost", 8081)
    found = await GuardedResolver(guard, FakeResolver("10.9.9.9")).resolve("svc.internal", 1)
    assert [r["host"] for r in found] == ["10.9.9.9"]
