"""The PostgreSQL schema, as numbered migrations applied in order, each once, under an advisory
lock (replicas starting together never race). A database newer than this runtime is refused."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

# Any constant: one lock id per purpose in the database ("saigon" in ASCII).
MIGRATION_LOCK_ID = 0x736169676F6E


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "per-user mesh graphs and the user -> domain map",
        """
        CREATE TABLE saigon_user_mesh (
            user_id text PRIMARY KEY,
            graph jsonb NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE saigon_user_domain (
            user_id text PRIMARY KEY,
            domain text NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
)
LATEST = MIGRATIONS[-1].version


class SchemaTooNew(RuntimeError):
    pass


def migrate(conn: psycopg.Connection[object]) -> list[int]:
    """Bring the schema up to LATEST; returns the versions applied now."""
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS saigon_schema_migrations ("
            " version integer PRIMARY KEY, description text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = conn.execute("SELECT version FROM saigon_schema_migrations").fetchall()
        done = {int(row[0]) for row in rows}  # type: ignore[index]
        if done and max(done) > LATEST:
            raise SchemaTooNew(f"the database schema is at version {max(done)}; this runtime knows up to {LATEST}")
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO saigon_schema_migrations (version, description) VALUES (%s, %s)",
                (migration.version, migration.description),
            )
            applied.append(migration.version)
    return applied


def schema_version(conn: psycopg.Connection[object]) -> int:
    row = conn.execute("SELECT coalesce(max(version), 0) FROM saigon_schema_migrations").fetchone()
    return int(row[0]) if row is not None else 0  # type: ignore[index]
