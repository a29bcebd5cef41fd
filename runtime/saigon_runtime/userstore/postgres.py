"""The PostgreSQL user store, for several replicas sharing per-user data.

Graphs are JSONB rows; reads go through a per-replica cache; every write sends a NOTIFY in its
own transaction (delivered at commit), and each replica LISTENs on one dedicated connection and
drops what changed, so a write through any replica is visible to all within the notification's
delay (milliseconds). psycopg 3 with a connection pool; the methods block, so callers on an
event loop run them in a worker thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from saigon_runtime.mesh.schema import MAX_MESH_BYTES, MeshError, MeshGraph, MeshTooLarge, parse_mesh, validate_user_id
from saigon_runtime.userstore.base import MeshInput, StoreUnavailable, validate_domain
from saigon_runtime.userstore.cache import InvalidatedCache
from saigon_runtime.userstore.migrations import migrate

log = logging.getLogger(__name__)

CHANNEL = "saigon_user_changes"
MESH, DOMAIN = "m", "d"
_Cached = MeshGraph | str | None | MeshError


class PostgresUserStore:
    kind = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 8,
        max_cached: int = 4096,
        max_bytes: int = MAX_MESH_BYTES,
        timeout_s: float = 5.0,
        reconnect_s: float = 0.5,
    ) -> None:
        self.dsn = dsn
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        # A statement that runs longer than the timeout is cancelled server-side.
        options = f"-c statement_timeout={int(timeout_s * 1000)}"
        self.pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "options": options, "connect_timeout": max(1, int(timeout_s))},
            timeout=timeout_s,
            open=False,
            name="saigon-userstore",
        )
        self.cache: InvalidatedCache[_Cached] = InvalidatedCache(max_cached)
        try:
            self.pool.open(wait=True, timeout=timeout_s)
            with self.pool.connection() as conn:
                applied = migrate(conn)
        except (psycopg.Error, PoolTimeout) as exc:
            self.pool.close()
            raise StoreUnavailable(f"cannot reach the user store database ({type(exc).__name__})") from None
        if applied:
            log.info("user store schema migrated to version %d", applied[-1])
        self._listener = _Listener(dsn, self.cache, reconnect_s=reconnect_s, timeout_s=timeout_s)
        self._listener.start()
        # Until LISTEN is in place nothing is cached, so starting before it is only slower, never stale.
        self._listener.listening.wait(timeout_s)

    # ---- meshes --------------------------------------------------------------------------------
    def get_mesh(self, user_id: str) -> MeshGraph | None:
        validate_user_id(user_id)
        value = self.cache.get_or_load((MESH, user_id), lambda: self._load_mesh(user_id))
        if isinstance(value, MeshError):
            raise type(value)(str(value))
        assert value is None or isinstance(value, MeshGraph)
        return value

    def put_mesh(self, user_id: str, data: MeshInput) -> MeshGraph:
        validate_user_id(user_id)
        graph = parse_mesh(data, max_bytes=self.max_bytes)
        payload = graph.model_dump_json()
        if len(payload) > self.max_bytes:
            raise MeshTooLarge(f"mesh is {len(payload)} bytes once normalised; the limit is {self.max_bytes}")
        self._write(
            "INSERT INTO saigon_user_mesh (user_id, graph) VALUES (%s, %s::jsonb) "
            "ON CONFLICT (user_id) DO UPDATE SET graph = EXCLUDED.graph, updated_at = now()",
            (user_id, payload),
            (MESH, user_id),
        )
        return graph

    def delete_mesh(self, user_id: str) -> bool:
        validate_user_id(user_id)
        return self._write("DELETE FROM saigon_user_mesh WHERE user_id = %s", (user_id,), (MESH, user_id)) > 0

    # ---- domains -------------------------------------------------------------------------------
    def domain_of(self, user_id: str) -> str | None:
        validate_user_id(user_id)
        value = self.cache.get_or_load((DOMAIN, user_id), lambda: self._load_domain(user_id))
        return value if isinstance(value, str) else None

    def set_domain(self, user_id: str, domain: str | None) -> None:
        validate_user_id(user_id)
        if domain is None:
            self._write("DELETE FROM saigon_user_domain WHERE user_id = %s", (user_id,), (DOMAIN, user_id))
            return
        self._write(
            "INSERT INTO saigon_user_domain (user_id, domain) VALUES (%s, %s) "
            "ON CONFLICT (user_id) DO UPDATE SET domain = EXCLUDED.domain, updated_at = now()",
            (user_id, validate_domain(domain)),
            (DOMAIN, user_id),
        )

    def close(self) -> None:
        self._listener.stop()
        self.pool.close()

    # ---- database ------------------------------------------------------------------------------
    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        try:
            with self.pool.connection(timeout=self.timeout_s) as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            # Class only: a DSN or server message may carry a host or a user name.
            raise StoreUnavailable(f"the user store database is unavailable ({type(exc).__name__})") from None

    def _load_mesh(self, user_id: str) -> MeshGraph | MeshError | None:
        with self._connection() as conn:
            row = conn.execute("SELECT graph::text FROM saigon_user_mesh WHERE user_id = %s", (user_id,)).fetchone()
        if row is None:
            return None
        try:
            return parse_mesh(str(row[0]), max_bytes=self.max_bytes)
        except MeshError as exc:  # a row written by something else: refused, and remembered as refused
            return exc

    def _load_domain(self, user_id: str) -> str | None:
        with self._connection() as conn:
            row = conn.execute("SELECT domain FROM saigon_user_domain WHERE user_id = %s", (user_id,)).fetchone()
        if row is None:
            return None
        try:
            return validate_domain(row[0])
        except MeshError:
            return None

    def _write(self, sql: str, params: tuple[object, ...], key: tuple[str, str]) -> int:
        with self._connection() as conn, conn.transaction():
            changed = conn.execute(sql.encode(), params).rowcount
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{key[0]}:{key[1]}"))
        self.cache.invalidate(key)  # our own listener will say so too; this replica needs no wait
        return changed


class _Listener:
    """One connection LISTENing for changes; invalidates the cache. When the connection drops,
    the cache is emptied and disabled until LISTEN is back (notifications may have been missed)."""

    def __init__(self, dsn: str, cache: InvalidatedCache[_Cached], *, reconnect_s: float, timeout_s: float) -> None:
        self.dsn = dsn
        self.cache = cache
        self.reconnect_s = reconnect_s
        self.timeout_s = timeout_s
        self.listening = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="saigon-userstore-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=max(1, int(self.timeout_s))) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.cache.reset(enabled=True)
                    self.listening.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._apply(note.payload)
            except psycopg.Error as exc:
                if self.listening.is_set():
                    log.warning("user store: change notifications lost (%s); reconnecting", type(exc).__name__)
            finally:
                self.listening.clear()
                self.cache.reset(enabled=False)
            self._stop.wait(self.reconnect_s)

    def _apply(self, payload: str) -> None:
        kind, _, user_id = payload.partition(":")
        if kind in (MESH, DOMAIN) and user_id:
            self.cache.invalidate((kind, user_id))
