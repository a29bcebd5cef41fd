"""The operator's side of placement (pure): which pods count for an adapter, the router's servers
and owners' map, and a promotion that completes once the placed pods serve the new version."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from saigon_contract import haproxy, placement
from saigon_contract.reports import AdapterReport, PodReport
from saigon_contract.specs import Promotion, parse_target
from saigon_operator.builders.router import build_config_map
from saigon_operator.placement import Placements, cold_owners, placed_servers
from saigon_operator.records import AdapterRecord
from saigon_operator.status import PodView, adapter_status, find_condition

NOW = "2026-01-01T00:00:00Z"
SHA1, SHA2 = "1" * 64, "2" * 64
V1 = parse_target({"version": "v1", "sha256": SHA1, "source": {"https": {"url": "https://a.example/v1.tar"}}})
V2 = parse_target({"version": "v2", "sha256": SHA2, "source": {"https": {"url": "https://a.example/v2.tar"}}})
PODS = ["llama-a", "llama-b", "llama-c", "llama-d"]
KEY = ("ns", "llama")


def model(*, router: bool = True, replicas: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "baseModel": {"path": "/m"},
        "image": "i",
        "tokenSecretRef": {"name": "t"},
        "router": {"enabled": router},
    }
    if replicas is not None:
        spec["placement"] = {"replicas": replicas}
    return {"metadata": {"namespace": "ns", "name": "llama", "uid": "u1"}, "spec": spec}


def view(name: str, reports: dict[str, AdapterReport] | None = None, *, ready: bool = True) -> PodView:
    return PodView(name, "Running", ready, False, "h", PodReport(adapters=reports or {}), ip=f"10.0.0.{ord(name[-1])}")


def loaded(t: Any) -> AdapterReport:
    return AdapterReport("Loaded", target=t.version, version=t.version, digest=t.sha256, loaded_at=NOW)


def test_user_adapters_count_only_their_owners_shared_ones_every_pod() -> None:
    placements = Placements()
    assert placements.observe(model())
    assert not placements.observe(model())  # the same spec: nothing to redo
    pods = [view(p) for p in PODS]
    owners = placement.table(PODS, 2).owners[placement.slot_of("alice")]
    held, where = placements.placed(KEY, "user_alice", pods)
    assert [p.name for p in held] == sorted(owners) and where.pods == owners and where.slot == 71
    for shared in ("global", "domain_law", None):
        held, where = placements.placed(KEY, shared, pods)
        assert len(held) == 4 and where.all_replicas
    # Without the router, or with replicas 0, every adapter lives everywhere.
    for body in (model(router=False), model(replicas=0)):
        placements.observe(body)
        held, where = placements.placed(KEY, "user_alice", pods)
        assert len(held) == 4 and where.all_replicas
    placements.observe(model(replicas=3))
    assert len(placements.placed(KEY, "user_alice", pods)[0]) == 3
    # An invalid spec keeps the last valid one.
    broken = model()
    broken["spec"]["replicas"] = -1
    assert not placements.observe(broken)
    assert len(placements.placed(KEY, "user_alice", pods)[0]) == 3


def test_status_is_ready_once_the_placed_pods_serve_it() -> None:
    placements = Placements()
    placements.observe(model())
    owners = placement.table(PODS, 2).owners[placement.slot_of("alice")]
    pods = [view(p, {"user_alice": loaded(V1)} if p in owners else {}) for p in PODS]
    held, where = placements.placed(KEY, "user_alice", pods)
    record = AdapterRecord("ns", "alice", "u", "llama", generation=1, adapter_name="user_alice", target=V1)
    status = adapter_status(record.facts(), held, None, NOW)
    assert status["serving"] == "2/2" and status["phase"] == "Ready"
    assert [p["pod"] for p in status["pods"]] == sorted(owners)
    assert find_condition(status["conditions"], "Ready")["status"] == "True"  # type: ignore[index]
    assert where.to_status() == {"allReplicas": False, "slot": 71, "pods": list(owners)}


def test_a_promotion_completes_when_the_placed_pods_serve_the_new_version() -> None:
    placements = Placements()
    placements.observe(model())
    owners = placement.table(PODS, 2).owners[placement.slot_of("alice")]
    record = AdapterRecord("ns", "alice", "u", "llama", generation=2, adapter_name="user_alice", target=V1)
    record.desired, record.policy = V2, Promotion()
    # The pods that do not hold alice's adapter report nothing about it, and need not.
    pods = [view(p, {"user_alice": loaded(V1)} if p in owners else {}) for p in PODS]
    step = record.next_promotion(placements.placed(KEY, "user_alice", pods)[0], time.time())
    assert step is not None and step.state.candidate == V2 and step.state.stage == "Full"
    record.promotion = step.state
    pods = [view(p, {"user_alice": loaded(V2)} if p in owners else {}) for p in PODS]
    step = record.next_promotion(placements.placed(KEY, "user_alice", pods)[0], time.time())
    assert step is not None and step.state.candidate is None and step.state.stable == V2
    assert [e[1] for e in step.events] == ["Promoted"]


def test_the_router_lists_ready_pods_and_passes_over_owners_still_fetching_what_another_serves() -> None:
    placements = Placements()
    placements.observe(model())
    placed = placement.table(PODS, 2)
    alice = placed.owners[placement.slot_of("alice")]
    record = AdapterRecord("ns", "alice", "u", "llama", adapter_name="user_alice", target=V1)
    # A brand-new adapter that no pod has yet: its owners stay listed (it arrives there first).
    pods = [view(p, ready=p != "llama-d") for p in PODS]
    assert cold_owners(placed, pods, [record]) == set()
    # The second owner serves it, the first still fetches it: the first is passed over for that slot only.
    pods = [view(p, {"user_alice": loaded(V1)} if p == alice[1] else {}, ready=p != "llama-d") for p in PODS]
    assert cold_owners(placed, pods, [record]) == {(placement.slot_of("alice"), alice[0])}
    view_ = placements.model(KEY)
    assert view_ is not None
    servers = placed_servers(view_, placed, pods, [record])
    assert servers is not None and servers.ranks == 2
    assert [s.name for s in servers.servers] == ["llama-a", "llama-b", "llama-c"]  # llama-d is not ready
    lines = dict(line.split(" ") for line in servers.owners_map.splitlines())
    assert lines[str(placement.slot_of("alice"))] == alice[1]
    other = placement.slot_of("bob")
    assert lines[str(other)].split(placement.MAP_SEPARATOR) == list(placed.owners[other])
    # A failed load does not keep a pod out of routing for ever.
    failed = AdapterReport("Failed", target="v1", reason="DigestMismatch")
    pods = [view(p, {"user_alice": failed if p == alice[0] else loaded(V1)}) for p in PODS]
    assert cold_owners(placed, pods, [record]) == set()
    text = haproxy.render(
        haproxy.RouterConfig(port=8001, placement=haproxy.PlacementRouting("/m/owners.map", 2)),
        haproxy.StaticServers(servers.servers),
    )
    assert "use-server llama-a if { var(txn.saigon_owners),field(2,|) -m str llama-a }" in text


def test_the_operators_placed_router_configuration_passes_haproxys_check(tmp_path: Path) -> None:
    """With the pods as servers, and with none ready yet (every request then answers 503)."""
    binary = shutil.which("haproxy")
    assert binary, "haproxy is missing: run scripts/system-deps.sh (Debian package haproxy)"
    placements = Placements()
    placements.observe(model())
    view_ = placements.model(KEY)
    assert view_ is not None
    placed = placement.table(PODS, 2)
    for pods in ([view(p) for p in PODS], [view(p, ready=False) for p in PODS]):
        servers = placed_servers(view_, placed, pods, [])
        data = build_config_map(view_.owner, view_.spec, servers)["data"]
        assert set(data) == {haproxy.CONFIG_FILE, haproxy.PLACEMENT_MAP_FILE}
        (tmp_path / haproxy.PLACEMENT_MAP_FILE).write_text(data[haproxy.PLACEMENT_MAP_FILE])
        text = data[haproxy.CONFIG_FILE].replace(haproxy.CONFIG_DIR, str(tmp_path))
        (tmp_path / haproxy.CONFIG_FILE).write_text(text)
        checked = subprocess.run(
            [binary, "-c", "-f", str(tmp_path / haproxy.CONFIG_FILE)], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert text.count("    server ") == sum(p.ready for p in pods)
