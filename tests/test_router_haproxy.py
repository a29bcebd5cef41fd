"""The router for real: HAProxy, configured by the operator's renderer, in front of three real
runtime processes. 100 users with an adapter each send 20 requests each; then one runtime is
killed while they go on.

Figures come from the runtimes themselves (adapter cache hits and misses on /metrics) and
from HAProxy's X-Saigon-Replica response header (which replica answered)."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import requests
from saigon_runtime.bench.routing import (
    REPLICA_HEADER,
    USER_HEADER,
    Fleet,
    adapter_of,
    build_assets,
    cache_counters,
    hit_rate,
    install_copies,
    replicas_per_user,
    run_sessions,
    running_fleet,
    sessions,
    user_name,
    warm_up,
)

USERS = 100
REQUESTS_PER_USER = 20
ACTIVE = 12  # users in a session at once

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    assert shutil.which("haproxy"), "haproxy is missing: run scripts/system-deps.sh (Debian package haproxy)"
    root = tmp_path_factory.mktemp("routing")
    base = build_assets(root, USERS, quick=True)
    dirs = install_copies(root, 3)
    # 40 slots each: a third of the users fits on each runtime, all of them would not.
    with running_fleet(root, base, dirs, max_loras=40, max_rank=4) as running:
        asyncio.run(warm_up(running))
        yield running


def test_streams_pass_through_the_router_untouched(fleet: Fleet) -> None:
    body = {"model": adapter_of(7), "prompt": "the cat", "max_tokens": 12, "temperature": 0, "stream": True,
            "ignore_eos": True, "user": user_name(7)}  # fmt: skip
    headers = {USER_HEADER: user_name(7)}
    with requests.post(f"{fleet.url}/v1/completions", json=body, headers=headers, stream=True, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        replica = next(rt for rt in fleet.runtimes if rt.name == r.headers[REPLICA_HEADER])
        events = [line for line in r.iter_lines(decode_unicode=True) if line]
    with requests.post(f"{replica.url}/v1/completions", json=body, stream=True, timeout=60) as r:
        direct = [line for line in r.iter_lines(decode_unicode=True) if line]
    assert events[-1] == "data: [DONE]" and len(events) >= 4

    def text(lines: list[str]) -> str:
        return "".join(json.loads(e.removeprefix("data: "))["choices"][0]["text"] for e in lines[:-1])

    assert text(events) == text(direct) and len(events) == len(direct)
    # Without a user header or credential, requests still get through (round-robin).
    plain = requests.get(f"{fleet.url}/v1/models", timeout=30)
    assert plain.status_code == 200 and plain.headers[REPLICA_HEADER]


def test_affinity_keeps_each_user_on_one_replica_and_survives_a_killed_runtime(fleet: Fleet) -> None:
    # Phase 1: every user's 20 requests, with 12 users active at a time.
    before = cache_counters(fleet)
    order = sessions(USERS, REQUESTS_PER_USER, seed=1)
    first, wall = asyncio.run(
        run_sessions(fleet.url, order, requests_per_user=REQUESTS_PER_USER, active=ACTIVE, max_tokens=1,
                     affinity=True)
    )  # fmt: skip
    hits, misses, rate = hit_rate(before, cache_counters(fleet))
    spread = replicas_per_user(first)
    print(
        f"\n[measure] {len(first)} requests in {wall:.1f}s through HAProxy; adapter cache hit rate {rate:.1%} "
        f"({hits:.0f} hits, {misses:.0f} misses); replicas per user: {Counter(len(s) for s in spread.values())}"
    )
    assert [o.error for o in first if o.error] == []
    assert hits + misses == USERS * REQUESTS_PER_USER
    assert rate >= 0.90
    assert len(spread) == USERS and max(len(s) for s in spread.values()) <= 2

    # Phase 2: kill the busiest runtime (SIGKILL: no draining) while every user sends 4 more.
    home = {user: Counter(o.replica for o in first if o.user == user).most_common(1)[0][0] for user in spread}
    victim_name = Counter(home.values()).most_common(1)[0][0]
    victim = next(rt for rt in fleet.runtimes if rt.name == victim_name)
    assert victim.process is not None
    moved_users = {u for u, r in home.items() if r == victim_name}
    killed_at: list[float] = []

    def kill_soon() -> None:
        time.sleep(1.0)
        victim.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        killed_at.append(time.perf_counter())

    killer = threading.Thread(target=kill_soon)
    started = time.perf_counter()
    killer.start()
    second, _ = asyncio.run(
        run_sessions(fleet.url, sessions(USERS, 4, seed=2), requests_per_user=4, active=ACTIVE, max_tokens=1,
                     affinity=True, first_seq=REQUESTS_PER_USER)
    )  # fmt: skip
    killer.join()
    victim.process.wait(10)
    after_kill = [o for o in second if started + o.started_s > killed_at[0] + 0.01]
    retried = [o for o in second if o.attempts > 1]
    print(f"[measure] killed {victim_name} ({len(moved_users)} users); {len(second)} requests, "
          f"{len(after_kill)} after the kill, {len(retried)} needed a client retry")  # fmt: skip
    # No request fails beyond one retry (HAProxy's own retries and redispatch come first).
    assert [o.error for o in second if o.error] == []
    assert all(o.attempts <= 2 for o in second)
    assert len(after_kill) > USERS  # the kill happened early in the phase
    # The victim's users moved to the survivors; most others stayed where they were.
    assert all(o.replica != victim_name for o in after_kill)
    assert {o.user for o in after_kill} & moved_users
    stayed = [o for o in after_kill if o.user not in moved_users]
    kept = sum(o.replica == home[o.user] for o in stayed)
    print(f"[measure] {kept} of {len(stayed)} requests of the other users stayed on their replica")
    assert kept >= 0.75 * len(stayed)  # bounded loads may spill some while two replicas carry all
    spread_after = replicas_per_user(after_kill)
    assert max(len(s) for s in spread_after.values()) <= 2
