"""Placement end to end (issue 19 item 1): a SaigonModel of 3 replicas with the router on, so each
user adapter lives on 2 of them; on the real API server with the fake kubelet, real runtimes and
agents, and a real HAProxy reading the owners' map the operator published.

- each user adapter is downloaded by, and loaded on, exactly the 2 pods its status names;
- the operator's router ConfigMap names the pods as servers and its map equals the placement table;
- requests routed by the user header land on the first owner and are answered by the user's own
  adapter, with no further download anywhere;
- a killed owner's users are answered by their second owner, still with their adapter, still with
  no download;
- a new pod takes over only the slots it gains: exactly those adapters are downloaded again.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import requests
from controlplane.cluster import Cluster
from controlplane.processes import free_port
from saigon_contract import haproxy, placement
from saigon_e2e.artifacts import Artifact, make_artifact
from saigon_e2e.world import ADMIN, MODEL, World, running_world
from saigon_runtime.bench.routing import start_haproxy, stop_process

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

USERS = [f"p{i}" for i in range(8)]


@pytest.fixture(scope="module")
def world(
    k8s_cluster: Cluster, k8s_api_client: kubernetes.client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    with running_world(
        k8s_cluster, k8s_api_client, tmp_path_factory.mktemp("placement-e2e"), prefix="e2e-placement", replicas=3,
        model_spec={"router": {"enabled": True}},
    ) as w:  # fmt: skip
        yield w


@pytest.fixture(scope="module")
def artifacts(world: World) -> dict[str, Artifact]:
    base = world.base_model
    made = {u: make_artifact(base, world.workdir / "artifacts" / u, seed=40 + i) for i, u in enumerate(USERS)}
    made["global"] = make_artifact(base, world.workdir / "artifacts" / "global", seed=39)
    return made


def placement_of(world: World, user: str) -> tuple[str, ...] | None:
    status = (world.get_adapter(f"a-{user}") or {}).get("status") or {}
    where = status.get("placement") or {}
    ready = {c["type"]: c["status"] for c in status.get("conditions") or []}.get("Ready")
    if ready != "True" or where.get("allReplicas") is not False or len(where.get("pods") or ()) != 2:
        return None
    return tuple(where["pods"])


def holders(world: World, adapter: str) -> set[str]:
    """Pods whose runtime lists the adapter (ground truth from each runtime's admin API)."""
    return {p.name for p in world.pods if p.runtime is not None and p.runtime.poll() is None
            and adapter in world.runtime_adapters(p)}  # fmt: skip


def downloads(world: World, user: str) -> int:
    return world.sources.routes[f"a-{user}/v1.tar"].hits


def router_map(world: World) -> dict[int, tuple[str, ...]]:
    data = world.core.read_namespaced_config_map(f"{MODEL}-router", world.namespace).data or {}
    lines = (line.split(" ") for line in data.get(haproxy.PLACEMENT_MAP_FILE, "").splitlines())
    return {int(slot): tuple(owners.split(placement.MAP_SEPARATOR)) for slot, owners in lines}


def ask(url: str, user: str) -> requests.Response:
    body = {"model": f"user_{user}", "prompt": "the cat", "max_tokens": 2, "temperature": 0}
    headers = {**ADMIN, haproxy.DEFAULT_USER_HEADER: user}
    response = requests.post(f"{url}/v1/completions", json=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return response


@pytest.fixture(scope="module")
def placed(world: World, artifacts: dict[str, Artifact]) -> dict[str, tuple[str, ...]]:
    started = time.perf_counter()
    shared = world.adapter_manifest("a-global", user="-", version="v1", artifact=artifacts["global"])
    shared["spec"]["scope"] = {"global": True}
    world.kubectl_apply(
        shared, *(world.adapter_manifest(f"a-{u}", user=u, version="v1", artifact=artifacts[u]) for u in USERS)
    )
    owners = {u: world.wait_for(lambda u=u: placement_of(world, u), 240, f"a-{u} Ready on its 2 pods") for u in USERS}
    print(f"\n[measure] {len(USERS)} adapters Ready on their 2 pods of 3 in {time.perf_counter() - started:.1f}s")
    return owners


@pytest.fixture(scope="module")
def router(world: World, placed: dict[str, tuple[str, ...]]) -> Iterator[str]:
    """HAProxy with the operator's owners' map (servers: the fake pods' local ports, named after the pods)."""
    table = placement.table((p.name for p in world.pods), 2)
    wanted = {placement.slot_of(u): table.owners[placement.slot_of(u)] for u in USERS}

    def published() -> dict[str, str] | None:
        # Every pod ready (a server named after it) and each user's slot listing both owners.
        data = world.core.read_namespaced_config_map(f"{MODEL}-router", world.namespace).data or {}
        servers = all(f"    server {p.name} 127.0.0.1:8001" in data.get(haproxy.CONFIG_FILE, "") for p in world.pods)
        return data if servers and all(router_map(world).get(s) == o for s, o in wanted.items()) else None

    config_map = world.wait_for(published, 60, "the router's servers and map")
    map_path = world.workdir / haproxy.PLACEMENT_MAP_FILE
    map_path.write_text(config_map[haproxy.PLACEMENT_MAP_FILE])
    port, health = free_port(), free_port()
    config = haproxy.RouterConfig(
        port=port, health_port=health, bind_address="127.0.0.1", check_interval_ms=300,
        placement=haproxy.PlacementRouting(str(map_path), ranks=2),
    )  # fmt: skip
    servers = haproxy.StaticServers(
        tuple(haproxy.StaticServer(p.name, "127.0.0.1", p.runtime_port) for p in world.pods)
    )
    process = start_haproxy(Path(world.workdir / "haproxy.cfg"), haproxy.render(config, servers), health)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process, timeout_s=10)


def test_each_user_adapter_is_fetched_and_loaded_by_its_two_owners_only(
    world: World, placed: dict[str, tuple[str, ...]]
) -> None:
    table = placement.table((p.name for p in world.pods), 2)
    for user, owners in placed.items():
        assert owners == table.owners[placement.slot_of(user)]
        assert holders(world, f"user_{user}") == set(owners)
        assert downloads(world, user) == 2
    # Shared adapters still go everywhere.
    status = world.wait_for(lambda: world.served_everywhere("a-global", "v1", 3), 60, "global on every pod")
    assert status["placement"] == {"allReplicas": True}
    assert holders(world, "global") == {p.name for p in world.pods}


def test_routed_requests_land_on_an_owner_and_never_download(
    world: World, placed: dict[str, tuple[str, ...]], router: str
) -> None:
    before = {u: downloads(world, u) for u in USERS}
    for _ in range(3):
        for user in USERS:
            response = ask(router, user)
            assert response.headers[haproxy.REPLICA_HEADER] == placed[user][0]
            assert response.headers["X-Saigon-Adapter"] == f"user_{user}"
            assert not response.headers.get("X-Saigon-Fallback-Reason")
    assert {u: downloads(world, u) for u in USERS} == before
    for user in USERS:
        assert holders(world, f"user_{user}") == set(placed[user])


def test_a_killed_owners_users_are_answered_by_their_second_owner(
    world: World, placed: dict[str, tuple[str, ...]], router: str
) -> None:
    victim_name = placed[USERS[0]][0]
    victim = next(p for p in world.pods if p.name == victim_name)
    assert victim.runtime is not None
    victim.runtime.send_signal(signal.SIGKILL)
    victim.runtime.wait(10)
    before = {u: downloads(world, u) for u in USERS}
    moved = [u for u in USERS if victim_name in placed[u]]
    assert moved
    time.sleep(1.5)  # the router's checks mark it down
    for user in USERS:
        response = ask(router, user)
        survivor = next(p for p in placed[user] if p != victim_name)
        assert response.headers[haproxy.REPLICA_HEADER] == (survivor if user in moved else placed[user][0])
        assert response.headers["X-Saigon-Adapter"] == f"user_{user}"
    # Its pod still runs (a crashed container, not a removed pod): the placement stays, nothing moves.
    assert {u: downloads(world, u) for u in USERS} == before
    assert all(placement_of(world, u) in (placed[u], None) for u in USERS)


def test_with_every_owner_down_the_adapter_is_fetched_on_demand_where_the_user_lands(
    world: World, placed: dict[str, tuple[str, ...]], router: str
) -> None:
    first_victim = placed[USERS[0]][0]  # its runtime was killed by the previous test
    user = next(u for u in USERS if first_victim in placed[u])
    second_victim = next(p for p in placed[user] if p != first_victim)
    pod = next(p for p in world.pods if p.name == second_victim)
    assert pod.runtime is not None
    pod.runtime.send_signal(signal.SIGKILL)
    pod.runtime.wait(10)
    left = next(p.name for p in world.pods if p.name not in placed[user])
    before = downloads(world, user)
    time.sleep(1.5)  # the router's checks mark it down
    started = time.perf_counter()
    response = ask(router, user)
    print(f"\n[measure] answered by a non-owner after an on-demand fetch in {time.perf_counter() - started:.2f}s")
    assert response.headers[haproxy.REPLICA_HEADER] == left
    assert response.headers["X-Saigon-Adapter"] == f"user_{user}"
    assert not response.headers.get("X-Saigon-Fallback-Reason")
    assert downloads(world, user) == before + 1
    # The next request finds it there: no second download.
    assert ask(router, user).headers["X-Saigon-Adapter"] == f"user_{user}"
    assert downloads(world, user) == before + 1
    # The original API too: a user declared now, whose owners are both down, is answered by the
    # third pod with their adapter.
    table = placement.table((p.name for p in world.pods), 2)
    late = next(f"q{i}" for i in range(10_000) if set(table.owners[placement.slot_of(f"q{i}")]) == set(placed[user]))
    artifact = make_artifact(world.base_model, world.workdir / "artifacts" / late, seed=77)
    world.kubectl_apply(world.adapter_manifest(f"a-{late}", user=late, version="v1", artifact=artifact))
    world.wait_for(
        lambda: ((world.get_adapter(f"a-{late}") or {}).get("status") or {}).get("target"),
        60,
        "the late adapter's target",
    )
    body = {"user_id": late, "input_text": "the cat", "max_length": 2, "temperature": 0}
    headers = {**ADMIN, haproxy.DEFAULT_USER_HEADER: late}
    answer = requests.post(f"{router}/api/saigon/infer", json=body, headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.headers[haproxy.REPLICA_HEADER] == left
    assert answer.json()["adapter_used"] == f"user_{late}" and not answer.json()["fallback_reason"]
    # A user nobody declared is not fetched: the cascade falls back as before.
    unknown = ask(router, "nobody-declared-this")
    assert unknown.headers["X-Saigon-Adapter"] == "global"
    assert unknown.headers["X-Saigon-Fallback-Reason"] == "user_nobody-declared-this: missing"


def test_a_new_pod_takes_only_the_slots_it_gains(world: World, placed: dict[str, tuple[str, ...]]) -> None:
    assert world.kubelet is not None
    before = {u: downloads(world, u) for u in USERS}
    newcomer = world.kubelet.start_pod()
    table = placement.table((p.name for p in world.pods), 2)
    gained = [u for u in USERS if newcomer.name in table.owners[placement.slot_of(u)]]

    def statuses_follow() -> bool:
        return all(
            tuple(((world.get_adapter(f"a-{u}") or {}).get("status") or {}).get("placement", {}).get("pods") or ())
            == table.owners[placement.slot_of(u)]
            for u in USERS
        )

    world.wait_for(statuses_follow, 120, "every status shows the new placement")
    world.wait_for(
        lambda: all(newcomer.name in holders(world, f"user_{u}") for u in gained),
        180,
        "the new pod loads what it gained",
    )
    print(f"\n[measure] a 4th pod gained {len(gained)} of {len(USERS)} user adapters")
    for user in USERS:
        assert downloads(world, user) == before[user] + (1 if user in gained else 0), user
    for user in gained:
        assert newcomer.name in holders(world, f"user_{user}")
