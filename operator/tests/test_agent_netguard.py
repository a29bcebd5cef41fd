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
