"""A real runtime server on 127.0.0.1 for the server tests: the aiohttp app on its own event
loop in a background thread, so blocking clients (openai, requests, curl, schemathesis) can
talk to it from the test thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web
from saigon_runtime.assembly import build_engine
from saigon_runtime.config import RuntimeConfig
from saigon_runtime.engine.engine import Engine
from saigon_runtime.server.app import create_app
from saigon_runtime.server.state import STATE_KEY, ServerState

ADMIN_TOKEN = "admin-test-token"


@dataclass
class LiveServer:
    url: str
    app: web.Application
    loop: asyncio.AbstractEventLoop

    @property
    def state(self) -> ServerState:
        return self.app[STATE_KEY]

    @property
    def engine(self) -> Engine:
        assert self.state.engine is not None
        return self.state.engine

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)


def make_config(base_dir: Path, **overrides: Any) -> RuntimeConfig:
    defaults: dict[str, Any] = {
        "base_model_dir": base_dir,
        "device": "cpu",
        "max_loras": 4,
        "max_batch_size": 8,
        "admin_token": ADMIN_TOKEN,
        "max_new_tokens": 64,
    }
    defaults.update(overrides)
    return RuntimeConfig.from_env({}, **defaults)


@contextmanager
def live_server(
    config: RuntimeConfig,
    *,
    engine: Engine | None = None,
    extra_routes: list[web.RouteDef] | None = None,
    background_load: bool = False,
) -> Iterator[LiveServer]:
    """Serve `create_app(config, engine)` until the block exits (the app stops the engine).

    With `background_load` the app loads the engine itself after it starts listening, as
    `saigon-runtime serve` does. `extra_routes` are added outside the route table, as a
    careless future change might."""
    if engine is None and not background_load:
        engine = build_engine(config)
    app = create_app(config, engine)
    app.router.add_routes(extra_routes or [])
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []
    runner = web.AppRunner(app, shutdown_timeout=config.drain_timeout_s, access_log=None, handler_cancellation=True)
    address: list[str] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            host, port = runner.addresses[0][:2]
            address.append(f"http://{host}:{port}")
        except BaseException as exc:
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="live-server", daemon=True)
    thread.start()
    started.wait(120)
    if failure:
        raise failure[0]
    server = LiveServer(address[0], app, loop)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def with_overrides(config: RuntimeConfig, **changes: Any) -> RuntimeConfig:
    return replace(config, **changes)
