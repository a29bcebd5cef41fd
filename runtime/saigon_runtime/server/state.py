"""What the app holds while it runs, under typed `web.AppKey`s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from saigon_contract.background import BackgroundPool

from saigon_runtime.config import RuntimeConfig
from saigon_runtime.server.errors import ApiError
from saigon_runtime.server.metrics import ServerMetrics
from saigon_runtime.server.version_stats import VersionStats

LOAD_THREADS = 2

T = TypeVar("T")

if TYPE_CHECKING:
    from saigon_runtime.adapters.watcher import AdapterWatcher
    from saigon_runtime.audit import AuditLog
    from saigon_runtime.engine.engine import Engine
    from saigon_runtime.server.demand import OnDemand
    from saigon_runtime.service import InferenceService
    from saigon_runtime.userstore import UserStore


@dataclass
class ServerState:
    config: RuntimeConfig
    metrics: ServerMetrics
    engine: Engine | None = None
    service: InferenceService | None = None  # prompt assembly and reporting, shared with SaigonInference
    engine_error: str | None = None  # why the base model failed to load, when it did
    users: UserStore | None = None  # per-user data: meshes, the user -> domain map
    audit: AuditLog | None = None
    draining: bool = False
    started_at: float = field(default_factory=time.time)
    # The original API's status reports the last user served and their adapter.
    current_user: str | None = None
    current_adapter: str | None = None
    # Required adapters validated and loaded since start (by the startup task or the admin API).
    loaded_required: set[str] = field(default_factory=set)
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    watcher: AdapterWatcher | None = None  # finds new adapters and `active` flips on disk
    versions: VersionStats = field(default_factory=VersionStats)  # per adapter version, for promotion gates
    demand: OnDemand | None = None  # the agent's on-demand loads (config.demand_url)

    # Created in __post_init__ from the config: how many prompts are tokenized at once.
    tokenize_slots: asyncio.Semaphore = field(init=False)
    # Adapter loads from the admin API (the agent's), in threads of their own, so a bulk apply or a
    # promotion never holds the threads requests use. Reading and validating the files (`preparer`)
    # runs at a lower CPU priority, two at a time; warming the device slot and making the version
    # current (`loader`) at serving's priority, because the engine thread takes the slot pool's lock too.
    preparer: BackgroundPool = field(init=False)
    loader: BackgroundPool = field(init=False)
    # Requests being handled now (probes and scrapes aside); the drain waits for `idle`.
    in_flight: int = 0
    idle: asyncio.Event = field(init=False)

    def __post_init__(self) -> None:
        self.tokenize_slots = asyncio.Semaphore(max(1, self.config.tokenize_concurrency))
        self.preparer = BackgroundPool(LOAD_THREADS, "saigon-adapter-prepare")
        self.loader = BackgroundPool(LOAD_THREADS, "saigon-adapter-load", nice=0)
        self.idle = asyncio.Event()
        self.idle.set()

    def request_started(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def request_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()

    async def tokenizing(self, fn: Callable[..., T], *args: Any) -> T:
        """Run prompt preparation (templates, tokenization: CPU-bound, proportional to the prompt)
        in a worker thread, at most `tokenize_concurrency` at a time, never on the event loop."""
        async with self.tokenize_slots:
            return await asyncio.to_thread(fn, *args)

    def ready_engine(self) -> Engine:
        """The engine, or 503 while it loads, after it failed, or once the server is draining."""
        if self.draining:
            raise ApiError(503, "the server is shutting down", code="shutting_down")
        if self.engine is None:
            detail = "the base model failed to load" if self.engine_error else "the base model is still loading"
            raise ApiError(503, detail, code="not_ready")
        return self.engine

    def ready_service(self) -> InferenceService:
        self.ready_engine()
        assert self.service is not None
        return self.service

    def user_store(self, code: str = "mesh_disabled") -> UserStore:
        """The user store, or 409 `code` when this runtime has none."""
        if self.users is None:
            raise ApiError(409, "this runtime has no user store (set SAIGON_MESH_DIR or SAIGON_USER_STORE)", code=code)
        return self.users

    def stats(self) -> Any | None:
        return self.engine.stats() if self.engine is not None else None


STATE_KEY = web.AppKey("saigon_state", ServerState)
OPENAPI_KEY = web.AppKey("saigon_openapi", dict[str, Any])


def state_of(request: web.Request) -> ServerState:
    return request.app[STATE_KEY]
