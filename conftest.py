# Fixtures shared by every test directory (runtime/tests, operator/tests, tests).
pytest_plugins = ["controlplane.pytest_plugin"]

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real PostgreSQL server for the session (Debian's package; see scripts/system-deps.sh)."""
    from saigon_runtime.testing.postgres import running_postgres

    with running_postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres_server: object) -> str:
    """A fresh, empty database on the session's server."""
    from saigon_runtime.testing.postgres import PostgresServer

    assert isinstance(postgres_server, PostgresServer)
    return postgres_server.create_database()
