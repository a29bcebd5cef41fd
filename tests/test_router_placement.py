"""The router and the placement agree: a real HAProxy, configured by the contract's renderer with a
placement table's map, sends each user to the pod the table names first, then to the next owner
when that one is down, and to any live pod when every owner is.

The backends are plain HTTP servers named after pods (the router's choice is what is tested, not
the runtime); tests/test_placement_e2e.py runs the whole thing with runtimes, agents and the operator.
"""

from __future__ import annotations

import http.server
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from controlplane.processes import free_port
from saigon_contract import haproxy, placement
from saigon_contract.placement import slot_of
from saigon_runtime.bench.routing import start_haproxy, stop_process

USERS = 400
PODS = ["llama-5f7c9d-2xkqp", "llama-5f7c9d-8hz4m", "llama-5f7c9d-cw9rt", "llama-5f7c9d-tq6vn"]
SLOT_HEADER = "X-Test-Slot"


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HAProxy's health checks hang up early; nothing to report


@dataclass
class Backend:
    name: str
    server: _Server

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Router:
    url: str
    backends: dict[str, Backend]
    table: placement.PlacementTable


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    assert shutil.which("haproxy"), "haproxy is missing: run scripts/system-deps.sh (Debian package haproxy)"
    root = tmp_path_factory.mktemp("placement-router")
    backends = {}
    for name in PODS:
        server = _Server(("127.0.0.1", 0), _Answer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        backends[name] = Backend(name, server)
    placed = placement.table(PODS, 2)
    (root / haproxy.PLACEMENT_MAP_FILE).write_text(placed.map_text())
    config = haproxy.RouterConfig(
        port=free_port(),
        health_port=free_port(),
        bind_address="127.0.0.1",
        check_interval_ms=200,
        placement=haproxy.PlacementRouting(str(root / haproxy.PLACEMENT_MAP_FILE), ranks=2),
    )
    servers = haproxy.StaticServers(tuple(haproxy.StaticServer(b.name, "127.0.0.1", b.port) for b in backends.values()))
    text = haproxy.render(config, servers)
    # The slot HAProxy computed, shown for this test only (the router itself never tells it).
    replica_line = f"    http-response set-header {haproxy.REPLICA_HEADER} %[srv_name]\n"
    assert replica_line in text
    text = text.replace(
        replica_line, replica_line + f"    http-response set-header {SLOT_HEADER} %[var(txn.saigon_slot)]\n"
    )
    process = start_haproxy(root / "haproxy.cfg", text, config.health_port)
    try:
        url = f"http://127.0.0.1:{config.port}"
        _wait_all_up(url, backends)
        yield Router(url, backends, placed)
    finally:
        stop_process(process)
        for backend in backends.values():
            backend.stop()


def _wait_all_up(url: str, backends: dict[str, Backend]) -> None:
    deadline = time.monotonic() + 20
    seen: set[str] = set()
    while seen != set(backends) and time.monotonic() < deadline:
        seen.add(requests.get(f"{url}/x", timeout=5).headers[haproxy.REPLICA_HEADER])
    assert seen == set(backends)


def _route(session: requests.Session, router: Router, user: str) -> tuple[str, int]:
    r = session.get(f"{router.url}/v1/models", headers={haproxy.DEFAULT_USER_HEADER: user}, timeout=10)
    assert r.status_code == 200
    return r.headers[haproxy.REPLICA_HEADER], int(r.headers[SLOT_HEADER])


def test_each_user_goes_to_their_first_owner_and_the_slot_is_computed_alike(router: Router) -> None:
    users = [f"user-{i}" for i in range(USERS)] + ["alice", "Bob.Smith_42", "x", "0-0"]
    with requests.Session() as session:
        for user in users:
            replica, slot = _route(session, router, user)
            assert slot == slot_of(user), user  # bit for bit: HAProxy's crc32,mod == placement.slot_of
            assert replica == router.table.owners[slot][0], user
        # Without the header: any replica, as before.
        plain = session.get(f"{router.url}/v1/models", timeout=10)
        assert plain.status_code == 200 and plain.headers[haproxy.REPLICA_HEADER] in router.backends


def test_a_down_owner_hands_its_users_to_the_next_owner_then_to_anyone(router: Router) -> None:
    users = [f"user-{i}" for i in range(USERS)]
    first = {u: router.table.owners[slot_of(u)][0] for u in users}
    victim = PODS[0]
    router.backends[victim].stop()
    moved = [u for u in users if first[u] == victim]
    time.sleep(1.5)  # HAProxy's checks mark it down (2 failures, 200 ms apart)
    with requests.Session() as session:
        for user in users:
            replica, slot = _route(session, router, user)
            owners = router.table.owners[slot]
            assert replica == (owners[1] if owners[0] == victim else owners[0]), user
        # Both owners down: still answered, by a live pod.
        second = next(u for u in moved if router.table.owners[slot_of(u)][1] == PODS[1])
        router.backends[PODS[1]].stop()
        time.sleep(1.5)
        replica, _ = _route(session, router, second)
        assert replica in PODS[2:]
