"""An HTTPS artifact server on 127.0.0.1 (self-signed) in a background thread, with knobs for
slow, failing and hostile responses."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web


@dataclass
class Route:
    data: bytes = b""
    bytes_per_s: float | None = None  # throttled streaming
    redirect: str | None = None
    status: int = 200
    hits: int = 0
    started: threading.Event = field(default_factory=threading.Event)


class SourceServer:
    def __init__(self, cert: Path, key: Path) -> None:
        self._cert, self._key = cert, key
        self.routes: dict[str, Route] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="source-server", daemon=True)
        self._thread.start()
        self.port = self._call(self._start)

    def _call(self, coro_fn: Callable[[], Any]) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro_fn(), self._loop)
        return future.result(timeout=30)

    async def _start(self) -> int:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self._cert), str(self._key))
        app = web.Application()
        app.router.add_get("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        route = self.routes.get(request.match_info["path"])
        if route is None:
            return web.Response(status=404, text="not found")
        route.hits += 1
        route.started.set()
        if route.redirect:
            raise web.HTTPFound(route.redirect)
        if route.status != 200:
            return web.Response(status=route.status, text="error")
        if route.bytes_per_s is None:
            return web.Response(body=route.data)
        resp = web.StreamResponse(headers={"Content-Length": str(len(route.data))})
        await resp.prepare(request)
        chunk = max(1024, int(route.bytes_per_s / 10))
        for offset in range(0, len(route.data), chunk):
            await resp.write(route.data[offset : offset + chunk])
            await asyncio.sleep(0.1)
        return resp

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}/{path}"

    def put(self, path: str, data: bytes = b"", **options: Any) -> str:
        self.routes[path] = Route(data=data, **options)
        return self.url(path)

    def close(self) -> None:
        self._call(self._runner.cleanup)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
