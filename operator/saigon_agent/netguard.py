"""Where the agent may connect: public addresses, plus networks the operator lists explicitly.

A source URL names a host; the guard checks every address it resolves to, and the
connector then connects only to the checked addresses, so a DNS answer cannot
change between the check and the connection. Literal IPs in URLs are checked
before any request (aiohttp does not resolve them).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from saigon_agent.errors import SourceRejected

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# IPv6 forms that carry an IPv4 address a translator or tunnel relay will connect to.
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated, RFC 4291 2.5.5.1


def embedded_ipv4(address: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address leads to: IPv4-mapped and -compatible, NAT64, 6to4, Teredo."""
    if isinstance(address, ipaddress.IPv4Address):
        return ()
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo  # (server, client): a relay connects to the client
    value = int(address)
    if address in NAT64_WELL_KNOWN or (address in IPV4_COMPATIBLE and value > 1):  # not :: or ::1
        return (ipaddress.IPv4Address(value & 0xFFFFFFFF),)
    if address in NAT64_LOCAL_USE:
        # A /48 prefix (RFC 6052 2.2): IPv4 bits 48-63 and 72-95, around the zero "u" octet.
        return (ipaddress.IPv4Address(((value >> 64) & 0xFFFF) << 16 | ((value >> 32) & 0xFFFF)),)
    return ()


class AddressGuard:
    def __init__(self, allowed: Sequence[Network] = ()) -> None:
        self.allowed = tuple(allowed)

    def permits(self, address: IPAddress) -> bool:
        if self._listed(address):
            return True
        embedded = embedded_ipv4(address)
        if embedded:
            # The IPv4 address is where the connection ends up: it decides, by the same rule.
            return all(self.permits(inner) for inner in embedded)
        # is_global excludes loopback, private (RFC 1918, ULA), link-local (cloud metadata),
        # shared (CGNAT), documentation and reserved ranges.
        return address.is_global and not address.is_multicast

    def _listed(self, address: IPAddress) -> bool:
        return any(address in net for net in self.allowed if net.version == address.version)

    def check(self, address: IPAddress, host: str) -> None:
        if not self.permits(address):
            raise SourceRejected(
                f"{host} resolves to {address}, a {category(address)} address "
                "(list its network in the model's spec.adapterSources.allowedCidrs to allow it)"
            )

    def check_url(self, url: str) -> None:
        """Scheme and literal-address checks for a URL about to be requested."""
        parts = urlsplit(url)
        if parts.scheme != "https":
            raise SourceRejected(f"only https:// sources are allowed, not {parts.scheme or 'no'} scheme")
        host = parts.hostname
        if not host:
            raise SourceRejected("the URL names no host")
        if parts.username or parts.password:
            raise SourceRejected("the URL must not carry credentials")
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            return
        self.check(literal, host)


def category(address: IPAddress) -> str:
    """Why an address is not public, in words."""
    embedded = embedded_ipv4(address)
    if embedded:
        denied = [inner for inner in embedded if not AddressGuard().permits(inner)]
        if denied:
            return f"{category(denied[0])} (it embeds {denied[0]})"
    for attribute, words in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_unspecified", "unspecified"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(address, attribute):
            return words
    return "non-public"


class GuardedResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver and keeps only the permitted addresses."""

    def __init__(
        self, guard: AddressGuard, inner: AbstractResolver | None = None, *, trusted_hosts: frozenset[str] = frozenset()
    ) -> None:
        self.guard = guard
        self.inner = inner or DefaultResolver()
        # Hosts the operator configured itself (a proxy): resolved without the guard.
        self.trusted_hosts = frozenset(h.lower() for h in trusted_hosts)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        if host.lower() in self.trusted_hosts:
            return results
        kept: list[ResolveResult] = []
        first_denied: Any = None
        for result in results:
            address = ipaddress.ip_address(result["host"])
            if self.guard.permits(address):
                kept.append(result)
            elif first_denied is None:
                first_denied = address
        if not kept:
            if first_denied is not None:
                self.guard.check(first_denied, host)
            raise SourceRejected(f"{host} resolves to no permitted address")
        return kept

    async def close(self) -> None:
        await self.inner.close()
