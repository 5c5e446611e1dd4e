"""Where HTTP steps may connect: public addresses, plus what --http-allow lets through.

The guard sits in the HTTP client's resolver, so the addresses it checks are the addresses
the connection uses (no window for a second, different DNS answer). IP literals in URLs
never reach a resolver; the client checks them with `check_literal` before each request.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult

from engine.errors import EngineError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_HOSTNAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


class AllowListError(EngineError, ValueError):
    """An --http-allow entry that cannot be understood."""

    sqlstate = "22023"  # invalid_parameter_value


class Blocked(EngineError):
    """A destination the guard refuses; the message is the node's error text."""

    sqlstate = "42501"  # insufficient_privilege


@dataclass(frozen=True, slots=True)
class AllowEntry:
    """One --http-allow entry: an IP, a CIDR or a hostname, optionally with a port."""

    network: IPNetwork | None = None
    hostname: str | None = None
    port: int | None = None

    def matches(self, host: str, ip: IPAddress, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.hostname is not None:
            return normal_host(host) == self.hostname
        assert self.network is not None
        return any(candidate in self.network for candidate in _forms(ip))


def normal_host(host: str) -> str:
    """A URL host as entries name it: lower case, without the trailing dot of an FQDN."""
    return host.lower().rstrip(".")


def _forms(ip: IPAddress) -> tuple[IPAddress, ...]:
    """The address and, for an IPv4-mapped IPv6 address, its IPv4 form."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return (ip, ip.ipv4_mapped)
    return (ip,)


def parse_allow_list(text: str) -> tuple[AllowEntry, ...]:
    """Comma-separated entries, e.g. `127.0.0.1:8080, 10.0.0.0/8, internal.example`."""
    return tuple(parse_entry(item.strip()) for item in text.split(",") if item.strip())


def parse_entry(entry: str) -> AllowEntry:
    target, port = _split_port(entry)
    try:
        return AllowEntry(network=ipaddress.ip_network(target), port=port)
    except ValueError as exc:
        if "/" in target or _looks_numeric(target):
            raise AllowListError(f"bad --http-allow entry '{entry}': {exc}") from None
    name = normal_host(target)
    if not _HOSTNAME.fullmatch(name):
        raise AllowListError(f"bad --http-allow entry '{entry}': not an IP, CIDR or hostname")
    return AllowEntry(hostname=name, port=port)


def _looks_numeric(target: str) -> bool:
    return bool(target) and (":" in target or target.replace(".", "").isdigit())


def _split_port(entry: str) -> tuple[str, int | None]:
    """`[v6]:port`, `host:port`, or no port (bare IPv6 has several colons)."""
    if entry.startswith("["):
        close = entry.find("]")
        rest = entry[close + 1 :] if close > 0 else "?"
        if rest and not rest.startswith(":"):
            raise AllowListError(f"bad --http-allow entry '{entry}'")
        return entry[1:close], _port(entry, rest[1:]) if rest else None
    if entry.count(":") == 1:
        target, port = entry.split(":")
        return target, _port(entry, port)
    return entry, None


def _port(entry: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise AllowListError(f"bad --http-allow entry '{entry}': invalid port '{text}'")
    return int(text)


def is_public(ip: IPAddress) -> bool:
    """Globally routable unicast: not loopback, private (RFC 1918, fc00::/7), link-local
    (incl. the 169.254.169.254 metadata service), CGNAT, unspecified, multicast or
    reserved; IPv6 forms that embed an IPv4 address (mapped, 6to4, Teredo) are judged by
    it too."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(ip.ipv4_mapped)
        embedded = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and not is_public(embedded):
            return False
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_private
    )


def blocked_message(host: str, ip: str) -> str:
    """The node's error text for a refused destination (documented in the README)."""
    if literal_ip(host) is not None:
        return f"Blocked: '{host}' is a non-public address. Allow it with --http-allow."
    return f"Blocked: '{host}' resolves to a non-public address ({ip}). Allow it with --http-allow."


@dataclass(frozen=True, slots=True)
class Guard:
    """The destination policy: public addresses, or a matching --http-allow entry."""

    allow: tuple[AllowEntry, ...] = ()

    def permits(self, host: str, ip: IPAddress, port: int) -> bool:
        return is_public(ip) or any(entry.matches(host, ip, port) for entry in self.allow)

    def check_literal(self, host: str, port: int) -> None:
        """Refuse a URL whose host is a non-permitted IP literal (hostnames: see resolve)."""
        ip = literal_ip(host)
        if ip is not None and not self.permits(host, ip, port):
            raise Blocked(blocked_message(host, str(ip)))


def literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class GuardedResolver(AbstractResolver):
    """Resolves with `inner`, keeps only the addresses the guard permits."""

    def __init__(self, guard: Guard, inner: AbstractResolver) -> None:
        self.guard = guard
        self.inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        kept = [r for r in found if self._permits(host, r, port)]
        if not found:
            raise OSError(f"no address found for {host}")
        if not kept:
            raise Blocked(blocked_message(host, found[0]["host"]))
        return kept

    def _permits(self, host: str, result: ResolveResult, port: int) -> bool:
        ip = literal_ip(result["host"])
        return ip is not None and self.guard.permits(host, ip, port)

    async def close(self) -> None:
        await self.inner.close()
