"""A real PostgreSQL server in a temporary directory (Debian's `postgresql` package), for tests
and benchmarks: initdb + postgres on a free loopback port, stopped and removed afterwards.

As root (CI containers), the server runs as the package's `postgres` user: PostgreSQL refuses root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

SUPERUSER = "saigon"


def find_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin with initdb (SAIGON_PG_BIN overrides)."""
    override = os.environ.get("SAIGON_PG_BIN")
    if override:
        return Path(override)
    found = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    if not found:
        raise FileNotFoundError("PostgreSQL is not installed: run scripts/system-deps.sh (Debian package postgresql)")
    return max(found, key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.name)] or [0])


@dataclass
class PostgresServer:
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its DSN."""
        name = name or f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.dsn(name)

    def log(self) -> str:
        path = self.workdir / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_postgres_user(workdir: Path) -> Callable[[], None] | None:
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam("postgres")
    for path in [workdir, *workdir.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def demote() -> None:
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)

    return demote


@contextlib.contextmanager
def running_postgres(workdir: Path | None = None, *, max_connections: int = 200) -> Iterator[PostgresServer]:
    # As root the server's user must reach its directory: a private pytest tmp dir would not do.
    own = workdir is None or os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="saigon-pg-")) if own or workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # noqa: S103 - the server runs as another user and must enter it
    bin_dir = find_bin_dir()
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir(exist_ok=True)
    demote = _as_postgres_user(root)
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    init = subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync"],
        capture_output=True, preexec_fn=demote, env=env,
    )  # fmt: skip
    if init.returncode != 0:
        raise RuntimeError(
            f"initdb failed:\n{init.stdout.decode(errors='replace')}{init.stderr.decode(errors='replace')}"
        )
    port = _free_port()
    with (root / "postgres.log").open("ab") as log:
        if demote is not None:
            os.chown(root / "postgres.log", pwd.getpwnam("postgres").pw_uid, -1)
        process = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", f"max_connections={max_connections}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=demote, env=env, start_new_session=True,
        )  # fmt: skip
    server = PostgresServer(port, root, process)
    try:
        _wait_accepting(server)
        yield server
    finally:
        stop(process)
        if own:
            shutil.rmtree(root, ignore_errors=True)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # "fast" shutdown: disconnect clients, stop
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_accepting(server: PostgresServer, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited:\n{server.log()[-3000:]}")
        try:
            with psycopg.connect(server.dsn(), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres did not accept connections:\n{server.log()[-3000:]}") from None
            time.sleep(0.1)
