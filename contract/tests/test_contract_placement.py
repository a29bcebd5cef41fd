"""The placement table: owners per slot, stable under scaling, balanced, and what status carries."""

from __future__ import annotations

import zlib

import pytest
from saigon_contract import placement
from saigon_contract.placement import SLOTS, AdapterPlacement, placement_of, slot_of, table


def pods(n: int, prefix: str = "llama-7d9f8c-") -> list[str]:
    return [f"{prefix}{i:05x}" for i in range(n)]


def moved(before: placement.PlacementTable, after: placement.PlacementTable) -> float:
    """Share of (slot, owner) assignments that changed."""
    changed = sum(len(set(a) - set(b)) for a, b in zip(before.owners, after.owners, strict=True))
    return changed / (SLOTS * after.replicas)


def test_slots_are_crc32_mod_slots_and_owners_are_distinct_pods() -> None:
    assert slot_of("alice") == zlib.crc32(b"alice") % SLOTS == 71  # HAProxy's figure (test_router_haproxy)
    placed = table(pods(5), 2)
    assert placed.replicas == 2 and len(placed.owners) == SLOTS
    assert all(len(set(o)) == 2 and set(o) <= set(placed.pods) for o in placed.owners)
    # The same names in any order give the same table; fewer pods than replicas: every pod.
    assert table(reversed(pods(5)), 2) == placed
    assert all(set(o) == {"a"} for o in table(["a"], 2).owners)
    assert table([], 2).owners == ((),) * SLOTS


@pytest.mark.parametrize(("n", "k"), [(3, 2), (8, 2), (20, 3)])
def test_scaling_up_or_down_moves_only_the_slots_the_pod_gains_or_loses(n: int, k: int) -> None:
    before = table(pods(n), k)
    up = table([*pods(n), "llama-7d9f8c-new"], k)
    # The new pod takes about its share (k/(n+1) of assignments); nothing else moves.
    gained = sum("llama-7d9f8c-new" in o for o in up.owners) / SLOTS
    assert moved(before, up) == pytest.approx(gained / k, abs=0.02)
    assert gained / k == pytest.approx(1 / (n + 1), rel=0.3)
    for old, new in zip(before.owners, up.owners, strict=True):
        assert len(set(old) - set(new)) <= 1  # a slot loses at most the owner the new pod replaced
    # Removing a pod moves only that pod's slots, each to one new owner.
    gone = pods(n)[0]
    down = table(pods(n)[1:], k)
    for old, new in zip(before.owners, down.owners, strict=True):
        kept = set(old) - {gone}
        assert kept <= set(new)  # the survivors keep the slot
        assert len(set(new) - kept) == (1 if gone in old else 0)
    assert moved(before, down) == pytest.approx(1 / n, rel=0.3)


def test_the_surviving_owner_comes_first_when_an_owner_goes() -> None:
    """With k=2, a slot whose first owner leaves is routed to the other, which already holds it."""
    before = table(pods(4), 2)
    gone = pods(4)[0]
    after = table(pods(4)[1:], 2)
    for old, new in zip(before.owners, after.owners, strict=True):
        if gone in old:
            survivor = next(p for p in old if p != gone)
            assert new[0] == survivor


@pytest.mark.parametrize(("n", "k"), [(2, 2), (3, 2), (7, 2), (16, 3), (50, 2)])
def test_no_pod_holds_more_than_the_load_bound(n: int, k: int) -> None:
    placed = table(pods(n), k)
    fair = SLOTS * min(k, n) / n
    load = placed.load()
    assert sum(load.values()) == SLOTS * min(k, n)
    assert max(load.values()) <= placement.LOAD_FACTOR * fair + 1
    assert min(load.values()) >= 0.6 * fair
    # First owners (where the router sends users) are spread too.
    first = [o[0] for o in placed.owners]
    assert max(first.count(p) for p in placed.pods) <= 1.6 * SLOTS / n


def test_status_placement_round_trips_and_an_unreadable_one_means_everywhere() -> None:
    placed = table(pods(3), 2)
    user = placement_of("user_alice", placed)
    assert user.slot == 71 and user.pods == placed.owners[71] and not user.all_replicas
    assert AdapterPlacement.read(user.to_status()) == user
    assert user.holds(placed.owners[71][0]) and not user.holds(next(p for p in placed.pods if p not in user.pods))
    for shared in ("global", "domain_law"):
        assert placement_of(shared, placed).all_replicas
    assert placement_of("user_alice", None).all_replicas  # placement off
    for raw in (None, "x", {"slot": -1}, {"slot": SLOTS}, {"pods": "a"}):
        assert AdapterPlacement.read(raw).holds("any-pod")
    assert placed.owners_of("global") is None and placed.owners_of("user_alice") == user.pods


def test_the_map_file_names_each_slots_owners_in_order() -> None:
    placed = table(pods(3), 2)
    lines = placed.map_text().splitlines()
    assert len(lines) == SLOTS
    slot, owners = lines[71].split(" ")
    assert int(slot) == 71 and tuple(owners.split(placement.MAP_SEPARATOR)) == placed.owners[71]
