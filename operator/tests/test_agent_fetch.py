"""The agent's downloads against a real TLS server on 127.0.0.1 (self-signed, test-only CA bundle)."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from pathlib import Path

import pytest
from agent_support import TlsFiles, https_server, make_tls
from aiohttp import web
from saigon_agent.config import FetchLimits
from saigon_agent.errors import FetchFailed, SourceRejected, TooLarge
from saigon_agent.fetch import Fetcher

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


async def payload(_: web.Request) -> web.Response:
    return web.Response(body=PAYLOAD)


async def chunked_forever(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for _ in range(64):
        await resp.write(b"x" * 65536)
    return resp


async def slow(_: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.Response(body=b"late")


def redirect_to(location: str):  # type: ignore[no-untyped-def]
    async def handler(_: web.Request) -> web.Response:
        raise web.HTTPFound(location)

    return handler


def status(code: int):  # type: ignore[no-untyped-def]
    async def handler(_: web.Request) -> web.Response:
        return web.Response(status=code, text="no")

    return handler


def fetcher(tls: TlsFiles, **overrides: object) -> Fetcher:
    options: dict[str, object] = {"allowed_networks": LOOPBACK, "ca_bundle": tls.cert, "timeout_s": 10.0}
    options.update(overrides)
    return Fetcher(FetchLimits(**options))  # type: ignore[arg-type]


async def test_download_streams_and_hashes(tls: TlsFiles, tmp_path: Path) -> None:
    async with https_server(tls, {"/a.tar": payload}) as base:
        f = fetcher(tls)
        try:
            got = await f.download(f"{base}/a.tar", tmp_path / "a")
        finally:
            await f.close()
    assert got.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert got.size == len(PAYLOAD)
    assert (tmp_path / "a").read_bytes() == PAYLOAD


async def test_loopback_is_rejected_unless_allowlisted(tls: TlsFiles, tmp_path: Path) -> None:
    async with https_server(tls, {"/a.tar": payload}) as base:
        port = base.rsplit(":", 1)[1]
        f = fetcher(tls, allowed_networks=())
        try:
            with pytest.raises(SourceRejected, match=r"127\.0\.0\.1.*loopback"):
                await f.download(f"{base}/a.tar", tmp_path / "a")
            # A host name that resolves to loopback goes through the guarded resolver.
            with pytest.raises(SourceRejected, match=r"localhost resolves to"):
                await f.download(f"https://localhost:{port}/a.tar", tmp_path / "b")
        finally:
            await f.close()
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


async def test_localhost_name_allowed_by_allowlist(tls: TlsFiles, tmp_path: Path) -> None:
    async with https_server(tls, {"/a.tar": payload}) as base:
        port = base.rsplit(":", 1)[1]
        f = fetcher(tls, allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))
        try:
            got = await f.download(f"https://localhost:{port}/a.tar", tmp_path / "a")
        finally:
            await f.close()
    assert got.size == len(PAYLOAD)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:1/a.tar", "file:///etc/passwd", "ftp://example.com/a", "https://user:pw@example.com/a"],
)
async def test_only_plain_https_urls(tls: TlsFiles, tmp_path: Path, url: str) -> None:
    f = fetcher(tls)
    try:
        with pytest.raises(SourceRejected):
            await f.download(url, tmp_path / "a")
    finally:
        await f.close()


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("https://127.0.0.2/x", "loopback"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://10.1.2.3/x", "private"),
        ("https://[::1]/x", "loopback"),
        ("http://127.0.0.1/x", "https"),
    ],
)
async def test_redirects_to_forbidden_places_are_refused(tls: TlsFiles, tmp_path: Path, target: str, why: str) -> None:
    # Only 127.0.0.1 itself is allowed: the source is fine, where it redirects is not.
    async with https_server(tls, {"/a.tar": redirect_to(target)}) as base:
        f = fetcher(tls, allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))
        try:
            with pytest.raises(SourceRejected, match=why):
                await f.download(f"{base}/a.tar", tmp_path / "a")
        finally:
            await f.close()


async def test_redirect_within_allowed_hosts_is_followed_a_bounded_number_of_times(
    tls: TlsFiles, tmp_path: Path
) -> None:
    async with https_server(
        tls, {"/hop": redirect_to("/a.tar"), "/a.tar": payload, "/loop": redirect_to("/loop")}
    ) as base:
        f = fetcher(tls)
        try:
            got = await f.download(f"{base}/hop", tmp_path / "a")
            assert got.size == len(PAYLOAD)
            with pytest.raises(SourceRejected, match="more than 3 redirects"):
                await f.download(f"{base}/loop", tmp_path / "b")
        finally:
            await f.close()


async def test_size_limit_by_header_and_by_stream(tls: TlsFiles, tmp_path: Path) -> None:
    async with https_server(tls, {"/a.tar": payload, "/chunked": chunked_forever}) as base:
        f = fetcher(tls, max_bytes=1000)
        try:
            with pytest.raises(TooLarge, match="over the 1000-byte limit"):
                await f.download(f"{base}/a.tar", tmp_path / "a")
            with pytest.raises(TooLarge, match="exceeds the 1000-byte limit"):
                await f.download(f"{base}/chunked", tmp_path / "b")
        finally:
            await f.close()


async def test_time_limit(tls: TlsFiles, tmp_path: Path) -> None:
    async with https_server(tls, {"/slow": slow}) as base:
        f = fetcher(tls, timeout_s=0.5)
        try:
            with pytest.raises(FetchFailed, match=r"longer than 0\.5s") as info:
                await f.download(f"{base}/slow", tmp_path / "a")
        finally:
            await f.close()
    assert info.value.transient


async def test_untrusted_certificate_fails_verification(tls: TlsFiles, tmp_path: Path) -> None:
    async with https_server(tls, {"/a.tar": payload}) as base:
        f = fetcher(tls, ca_bundle=None)
        try:
            with pytest.raises(FetchFailed) as info:
                await f.download(f"{base}/a.tar", tmp_path / "a")
        finally:
            await f.close()
    assert info.value.reason == "TLSError"


async def test_http_errors_are_classified(tls: TlsFiles, tmp_path: Path) -> None:
    async with https_server(tls, {"/missing": status(404), "/denied": status(403), "/busy": status(503)}) as base:
        f = fetcher(tls)
        try:
            outcomes = {}
            for path in ("missing", "denied", "busy"):
                with pytest.raises(FetchFailed) as info:
                    await f.download(f"{base}/{path}", tmp_path / path)
                outcomes[path] = (info.value.reason, info.value.transient)
        finally:
            await f.close()
    assert outcomes == {
        "missing": ("SourceUnavailable", True),
        "denied": ("SourceError", False),
        "busy": ("SourceUnavailable", True),
    }


async def test_unreachable_port_is_a_transient_failure(tls: TlsFiles, tmp_path: Path) -> None:
    from controlplane.processes import free_port

    f = fetcher(tls, connect_timeout_s=2.0)
    try:
        with pytest.raises(FetchFailed) as info:
            await f.download(f"https://127.0.0.1:{free_port()}/a.tar", tmp_path / "a")
    finally:
        await f.close()
    assert info.value.transient
