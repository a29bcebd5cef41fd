"""Which addresses the agent may fetch from."""

from __future__ import annotations

import ipaddress

import pytest
from saigon_agent.config import parse_networks
from saigon_agent.errors import SourceRejected
from saigon_agent.netguard import AddressGuard

DENIED = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # shared address space
    "0.0.0.0",
    "224.0.0.1",
    "::1",
    "fe80::1",
    "fd12:3456::1",
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:10.0.0.1",
]
PUBLIC = ["8.8.8.8", "140.82.112.3", "2606:4700:4700::1111"]


@pytest.mark.parametrize("address", DENIED)
def test_non_public_addresses_are_denied_by_default(address: str) -> None:
    guard = AddressGuard()
    assert not guard.permits(ipaddress.ip_address(address))
    parsed = ipaddress.ip_address(address)
    with pytest.raises(SourceRejected, match=f"resolves to {str(parsed).replace('.', '[.]')}, a "):
        guard.check(parsed, "example.test")


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_permitted(address: str) -> None:
    assert AddressGuard().permits(ipaddress.ip_address(address))


def test_allowlist_opens_exactly_the_listed_networks() -> None:
    guard = AddressGuard(parse_networks("10.20.0.0/16, fd00::/8"))
    assert guard.permits(ipaddress.ip_address("10.20.3.4"))
    assert guard.permits(ipaddress.ip_address("::ffff:10.20.3.4"))
    assert guard.permits(ipaddress.ip_address("fd00::5"))
    assert not guard.permits(ipaddress.ip_address("10.21.0.1"))
    assert not guard.permits(ipaddress.ip_address("127.0.0.1"))
    assert not guard.permits(ipaddress.ip_address("169.254.169.254"))


def test_malformed_allowlist_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/8, not-a-network")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com/a", "only https"),
        ("file:///etc/passwd", "only https"),
        ("https:///nohost", "names no host"),
        ("https://u:p@example.com/a", "credentials"),
        ("https://127.0.0.1/a", "loopback"),
        ("https://[fe80::1]/a", "link-local"),
    ],
)
def test_url_checks(url: str, message: str) -> None:
    with pytest.raises(SourceRejected, match=message):
        AddressGuard().check_url(url)


def test_public_url_passes_the_static_checks() -> None:
    AddressGuard().check_url("https://example.com/adapters/a.tar")


# IPv6 forms that lead to an IPv4 address: the IPv4 address decides, by the same rule.
EMBEDDING_PRIVATE = [
    ("64:ff9b::7f00:1", "loopback"),  # NAT64 well-known prefix, 127.0.0.1
    ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 -> 169.254.169.254 (cloud metadata)
    ("64:ff9b::a00:1", "private"),  # NAT64 -> 10.0.0.1
    ("64:ff9b:1:7f00:0:100::", "loopback"),  # NAT64 local-use /48 -> 127.0.0.1 (RFC 6052 layout)
    ("64:ff9b:1:c0a8:1:100::", "private"),  # NAT64 local-use /48 -> 192.168.1.1
    ("2002:7f00:1::1", "loopback"),  # 6to4 -> 127.0.0.1
    ("2002:a9fe:a9fe::", "link-local"),  # 6to4 -> 169.254.169.254
    ("2002:c0a8:101::1", "private"),  # 6to4 -> 192.168.1.1
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo, client 127.0.0.1
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"),  # Teredo, client 10.0.0.1
    ("::127.0.0.1", "loopback"),  # IPv4-compatible (deprecated)
    ("::10.0.0.1", "private"),
]


@pytest.mark.parametrize(("address", "words"), EMBEDDING_PRIVATE)
def test_ipv6_forms_embedding_a_non_public_ipv4_are_denied(address: str, words: str) -> None:
    guard = AddressGuard()
    parsed = ipaddress.ip_address(address)
    assert not guard.permits(parsed)
    with pytest.raises(SourceRejected, match=f"a {words} "):
        guard.check(parsed, "example.test")
    with pytest.raises(SourceRejected, match=words):
        guard.check_url(f"https://[{address}]/adapter.tar")


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::808:808",  # NAT64 -> 8.8.8.8
        "64:ff9b:1:808:0:808::",  # NAT64 local-use -> 8.8.8.8
        "2002:808:808::1",  # 6to4 -> 8.8.8.8
    ],
)
def test_ipv6_forms_embedding_a_public_ipv4_are_permitted(address: str) -> None:
    assert AddressGuard().permits(ipaddress.ip_address(address))


def test_embedded_ipv4_follows_the_allowlist() -> None:
    guard = AddressGuard(parse_networks("10.20.0.0/16"))
    assert guard.permits(ipaddress.ip_address("64:ff9b::a14:304"))  # 10.20.3.4
    assert guard.permits(ipaddress.ip_address("2002:a14:304::1"))
    assert not guard.permits(ipaddress.ip_address("64:ff9b::a15:1"))  # 10.21.0.1
