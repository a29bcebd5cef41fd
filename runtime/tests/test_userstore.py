"""The user store: files of the original layout, and PostgreSQL (a real server, started by the
`postgres_dsn` fixture) shared by several replicas, each with its own invalidated cache."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from saigon_runtime.mesh.schema import InvalidUserId, MeshGraph, MeshValidationError
from saigon_runtime.userstore import InvalidDomain, StoreUnavailable
from saigon_runtime.userstore.files import FileUserStore
from saigon_runtime.userstore.migrations import LATEST, SchemaTooNew, migrate, schema_version
from saigon_runtime.userstore.postgres import PostgresUserStore


def graph(fact: str) -> dict[str, object]:
    return {"nodes": [{"id": "n1", "label": "fact", "text": fact}], "edges": []}


def eventually(check: Callable[[], bool], timeout_s: float = 1.0) -> float:
    """Seconds until `check()` held; fails after `timeout_s`."""
    started = time.perf_counter()
    while not check():
        assert time.perf_counter() - started < timeout_s, "not within the time limit"
        time.sleep(0.005)
    return time.perf_counter() - started


def text_of(found: MeshGraph | None) -> str | None:
    return found.nodes[0].text if found is not None else None


# ---------------------------------------------------------------- files


def test_file_store_keeps_the_original_layout(tmp_path: Path) -> None:
    store = FileUserStore(tmp_path / "mesh")
    store.put_mesh("alice", graph("alice keeps bees"))
    assert (
        json.loads((tmp_path / "mesh" / "user_alice_mesh.json").read_text())["nodes"][0]["text"] == "alice keeps bees"
    )
    assert text_of(store.get_mesh("alice")) == "alice keeps bees"
    assert store.get_mesh("bob") is None
    store.set_domain("alice", "cooking")
    assert json.loads((tmp_path / "mesh" / "domains.json").read_text()) == {"alice": "cooking"}
    # Another process (another store on the same files) sees it.
    other = FileUserStore(tmp_path / "mesh")
    assert other.domain_of("alice") == "cooking" and other.domain_of("bob") is None
    store.set_domain("alice", None)
    assert other.domain_of("alice") is None
    assert store.delete_mesh("alice") and not store.delete_mesh("alice")


def test_file_store_refuses_unsafe_ids_and_domains(tmp_path: Path) -> None:
    store = FileUserStore(tmp_path / "mesh")
    with pytest.raises(InvalidUserId):
        store.put_mesh("alice\n", graph("x"))
    with pytest.raises(InvalidUserId):
        store.domain_of("../etc")
    for bad in ("a/b", "x\n", "..", ""):
        with pytest.raises(InvalidDomain):
            store.set_domain("alice", bad)
    # A hand-edited map with unsafe entries: those are ignored, the rest served.
    (tmp_path / "mesh").mkdir()
    (tmp_path / "mesh" / "domains.json").write_text(json.dumps({"bob": "../x", "carol": "law", "x/y": "law"}))
    assert store.domain_of("bob") is None and store.domain_of("carol") == "law"


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture
def replicas(postgres_dsn: str) -> Iterator[tuple[PostgresUserStore, PostgresUserStore]]:
    a, b = PostgresUserStore(postgres_dsn), PostgresUserStore(postgres_dsn)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_postgres_schema_is_versioned_and_migrated_once(postgres_dsn: str) -> None:
    store = PostgresUserStore(postgres_dsn)
    store.close()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        assert schema_version(conn) == LATEST  # type: ignore[arg-type]
        assert migrate(conn) == []  # type: ignore[arg-type]
        columns = conn.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_name = 'saigon_user_mesh' "
            "AND column_name = 'graph'"
        ).fetchone()
        assert columns == ("jsonb",)
        conn.execute("INSERT INTO saigon_schema_migrations (version, description) VALUES (%s, 'future')", (LATEST + 1,))
    with pytest.raises(SchemaTooNew):
        PostgresUserStore(postgres_dsn)


def test_a_write_through_one_replica_is_visible_on_the_other_within_a_second(
    replicas: tuple[PostgresUserStore, PostgresUserStore],
) -> None:
    a, b = replicas
    a.put_mesh("alice", graph("v1"))
    # Once a's own notification has passed, b serves alice from its cache.
    eventually(lambda: text_of(b.get_mesh("alice")) == "v1" and b.cache.hits >= 1)
    for version in range(2, 12):
        a.put_mesh("alice", graph(f"v{version}"))
        eventually(lambda v=version: text_of(b.get_mesh("alice")) == f"v{v}")  # type: ignore[misc]
    assert b.get_mesh("nobody") is None
    a.put_mesh("nobody", graph("now here"))  # a cached "none" is invalidated too
    eventually(lambda: text_of(b.get_mesh("nobody")) == "now here")
    a.delete_mesh("nobody")
    eventually(lambda: b.get_mesh("nobody") is None)


def test_domains_are_shared_and_validated(replicas: tuple[PostgresUserStore, PostgresUserStore]) -> None:
    a, b = replicas
    assert b.domain_of("alice") is None
    a.set_domain("alice", "cooking")
    eventually(lambda: b.domain_of("alice") == "cooking")
    b.set_domain("alice", None)
    eventually(lambda: a.domain_of("alice") is None)
    with pytest.raises(InvalidDomain):
        a.set_domain("alice", "x\n")
    with pytest.raises(InvalidUserId):
        a.set_domain("alice\n", "cooking")
    with pytest.raises(MeshValidationError):
        a.put_mesh("alice", {"nodes": [{"id": "n", "label": "x"}], "edges": [{"source": "n", "target": "gone"}]})


def test_a_lost_notification_channel_never_serves_stale_data(
    replicas: tuple[PostgresUserStore, PostgresUserStore], postgres_dsn: str
) -> None:
    a, b = replicas
    a.put_mesh("alice", graph("before"))
    assert text_of(b.get_mesh("alice")) == "before"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        # Kill every LISTEN connection: b's listener drops, b stops caching until it is back.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE query LIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
        )
    a.put_mesh("alice", graph("after"))
    eventually(lambda: text_of(b.get_mesh("alice")) == "after")
    eventually(lambda: b._listener.listening.is_set(), timeout_s=5)
    a.put_mesh("alice", graph("again"))
    eventually(lambda: text_of(b.get_mesh("alice")) == "again")


def test_an_unreachable_database_is_a_named_refusal(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        PostgresUserStore("postgresql://nobody@127.0.0.1:1/none", timeout_s=1)
