"""HTTPS downloads with a size cap, a time cap, guarded addresses and hand-checked redirects."""

from __future__ import annotations

import hashlib
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp

from saigon_agent.config import FetchLimits
from saigon_agent.errors import FetchFailed, SourceRejected, TooLarge
from saigon_agent.netguard import AddressGuard, GuardedResolver

T = TypeVar("T")
_REDIRECTS = {301, 302, 303, 307, 308}
_CHUNK = 256 * 1024
# Answers read whole (an STS response, a file listing), never artifacts.
MAX_SMALL_RESPONSE = 1 << 20


@dataclass(frozen=True)
class Downloaded:
    path: Path
    sha256: str
    size: int


class Fetcher:
    """One connection pool for all downloads of an agent; every connection goes through the guard."""

    def __init__(self, limits: FetchLimits) -> None:
        self.limits = limits
        self.guard = AddressGuard(limits.allowed_networks)
        self._session: aiohttp.ClientSession | None = None
        # The proxy is the operator's own setting: its (usually private) address is not guarded.
        self.proxy_host = (urlsplit(limits.https_proxy).hostname or "").lower() if limits.https_proxy else None
        trusted = frozenset({self.proxy_host} if self.proxy_host else ())
        self.resolver = GuardedResolver(self.guard, trusted_hosts=trusted)
        # Checks a source's own addresses, trusting no host (not even the proxy's, as a source).
        self._strict = GuardedResolver(self.guard)

    def proxy_for(self, url: str) -> str | None:
        """The proxy a request to `url` goes through, or None (no proxy, or a noProxy host)."""
        if self.limits.https_proxy is None:
            return None
        host = (urlsplit(url).hostname or "").lower()
        for entry in self.limits.no_proxy:
            if entry == "*" or host == entry or host.endswith("." + entry):
                return None
        return self.limits.https_proxy

    async def _check_source_host(self, url: str, proxy: str | None) -> None:
        """Through a proxy the proxy resolves the host, and the connector trusts the proxy's host:
        in either case the guard checks the source's addresses here first."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if proxy is not None or host == self.proxy_host:
            await self._strict.resolve(host, parts.port or 443, socket.AF_UNSPEC)

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        if self.limits.ca_bundle is not None:
            ctx.load_verify_locations(cafile=str(self.limits.ca_bundle))
        return ctx

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=self.resolver, ssl=self._ssl_context(), limit=16, ttl_dns_cache=30
            )
            # trust_env=False: an HTTPS_PROXY in the environment would bypass the address guard (the
            # proxy is opt-in, through FetchLimits.https_proxy).
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def download(self, url: str, dest: Path, *, headers: Mapping[str, str] | None = None) -> Downloaded:
        """Streams `url` into `dest`, hashing as it goes. Raises a SyncError subclass on any failure."""
        timeout = aiohttp.ClientTimeout(
            total=self.limits.timeout_s, sock_connect=self.limits.connect_timeout_s, sock_read=60
        )
        return await self._get(url, headers, timeout, lambda resp: self._stream(resp, dest))

    async def get_small(self, url: str, *, headers: Mapping[str, str] | None = None) -> bytes:
        """GETs a small document (an index, a listing) into memory, with the download's guard and redirects."""
        timeout = aiohttp.ClientTimeout(total=60, sock_connect=self.limits.connect_timeout_s)
        return await self._get(url, headers, timeout, _read_small)

    async def post_form(self, url: str, form: Mapping[str, str]) -> tuple[int, bytes]:
        """POSTs a form (no redirects followed) and returns the status and the body, capped in size."""
        timeout = aiohttp.ClientTimeout(total=60, sock_connect=self.limits.connect_timeout_s)

        async def send() -> tuple[int, bytes]:
            proxy = await self._route(url)
            async with self.session.post(
                url, data=dict(form), allow_redirects=False, timeout=timeout, proxy=proxy
            ) as resp:
                return resp.status, await _read_small(resp)

        return await _classified(send(), timeout)

    async def _route(self, url: str) -> str | None:
        """Guards `url` and returns the proxy to reach it through (None: directly)."""
        self.guard.check_url(url)
        proxy = self.proxy_for(url)
        await self._check_source_host(url, proxy)
        return proxy

    async def _get(
        self,
        url: str,
        headers: Mapping[str, str] | None,
        client_timeout: aiohttp.ClientTimeout,
        read: Callable[[aiohttp.ClientResponse], Awaitable[T]],
    ) -> T:
        """GET with hand-checked redirects: every hop is guarded, and credentials stay with the first."""
        current = url
        for _ in range(self.limits.max_redirects + 1):
            hop = await _classified(self._hop(current, headers, client_timeout, read), client_timeout)
            if not isinstance(hop, _Redirect):
                return hop
            # Credentials for one host must not follow a redirect to another.
            current, headers = hop.location, None
        raise SourceRejected(f"more than {self.limits.max_redirects} redirects")

    async def _hop(
        self,
        url: str,
        headers: Mapping[str, str] | None,
        client_timeout: aiohttp.ClientTimeout,
        read: Callable[[aiohttp.ClientResponse], Awaitable[T]],
    ) -> T | _Redirect:
        proxy = await self._route(url)
        async with self.session.get(
            url, headers=dict(headers or {}), allow_redirects=False, timeout=client_timeout, proxy=proxy
        ) as resp:
            if resp.status in _REDIRECTS:
                location = resp.headers.get("Location")
                if not location:
                    raise FetchFailed(f"redirect {resp.status} without a Location", transient=False)
                return _Redirect(urljoin(url, location))
            if resp.status != 200:
                raise _status_error(resp.status)
            return await read(resp)

    async def _stream(self, resp: aiohttp.ClientResponse, dest: Path) -> Downloaded:
        cap = self.limits.max_bytes
        if resp.content_length is not None and resp.content_length > cap:
            raise TooLarge(f"artifact is {resp.content_length} bytes, over the {cap}-byte limit")
        digest = hashlib.sha256()
        size = 0
        with dest.open("wb") as out:
            async for chunk in resp.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > cap:
                    raise TooLarge(f"artifact exceeds the {cap}-byte limit")
                digest.update(chunk)
                out.write(chunk)
        if resp.content_length is not None and size != resp.content_length:
            raise FetchFailed(f"connection closed after {size} of {resp.content_length} bytes")
        return Downloaded(path=dest, sha256=digest.hexdigest(), size=size)


@dataclass(frozen=True)
class _Redirect:
    location: str


async def _classified(request: Awaitable[T], client_timeout: aiohttp.ClientTimeout) -> T:
    """Runs a request, turning transport failures into SyncErrors that name them."""
    try:
        return await request
    except TimeoutError:
        raise FetchFailed(f"download took longer than {client_timeout.total or 0:g}s") from None
    except aiohttp.ClientSSLError as exc:
        raise FetchFailed(f"TLS verification failed: {exc}", reason="TLSError") from None
    except aiohttp.ClientError as exc:
        raise FetchFailed(f"download failed: {exc.__class__.__name__}: {exc}") from None


async def _read_small(resp: aiohttp.ClientResponse) -> bytes:
    body = await resp.content.read(MAX_SMALL_RESPONSE + 1)
    if len(body) > MAX_SMALL_RESPONSE:
        raise TooLarge(f"{resp.url.host} answered more than {MAX_SMALL_RESPONSE} bytes")
    return body


def _status_error(status: int) -> FetchFailed:
    if status in (404, 408, 425, 429) or status >= 500:
        # Not there yet, or the server is busy: worth another try later.
        return FetchFailed(f"source answered HTTP {status}", reason="SourceUnavailable")
    return FetchFailed(f"source answered HTTP {status}", reason="SourceError", transient=False)
