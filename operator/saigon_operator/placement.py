"""Adapter placement per model, and the router that follows it.

Each user adapter lives on the pods that own its user's slot in the model's placement table
(saigon_contract.placement), computed from the names of the model's active pods; shared adapters,
and every adapter of a model without placement, live on all of them. The status writer asks
`placed` which pods count for an adapter (status, readiness and promotions count only those);
the agents read the result from `status.placement`.

The router follows the same table: `RouterSync` re-renders the router's ConfigMap (servers named
after the ready pods, the owners' map) whenever the pods change, and re-applies it with the
Deployment, whose config-hash annotation then rolls the routers (at most once per
`min_interval_s`, with the latest map). An owner that has not yet loaded an
adapter of its slot which another pod already serves (it just joined, or the slot just moved to it)
is left out of that slot's line until it has, so the router sends those users where their adapter is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

from saigon_contract import haproxy
from saigon_contract import resources as r
from saigon_contract.kube import ApiError, KubeClient, object_path
from saigon_contract.placement import AdapterPlacement, PlacementTable, placement_of, slot_of, table, user_of
from saigon_contract.specs import ModelSpec, SpecError, parse_model_spec
from saigon_contract.workqueue import KeyedQueue

from saigon_operator.builders.model import Owner
from saigon_operator.builders.router import PlacedServers, build_config_map, build_router_deployment
from saigon_operator.records import AdapterRecord
from saigon_operator.status import PodView

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, model)
PodsOf = Callable[[str, str], Collection[PodView]]
AdaptersOf = Callable[[str, str], Sequence[AdapterRecord]]


@dataclass(frozen=True)
class ModelView:
    owner: Owner
    spec: ModelSpec


class Placements:
    """The placement settings of every model, from the operator's own SaigonModel informer."""

    def __init__(self) -> None:
        self._models: dict[Key, ModelView] = {}

    def observe(self, body: dict[str, Any]) -> bool:
        """A SaigonModel was listed or changed; True when its placement may have changed.
        An invalid spec keeps the last valid one (the model's handler reports it)."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        try:
            spec = parse_model_spec(body.get("spec") or {})
        except SpecError:
            return False
        old = self._models.get(key)
        self._models[key] = ModelView(Owner(meta["name"], meta["namespace"], meta["uid"]), spec)
        return old is None or old.spec != spec

    def forget(self, key: Key) -> None:
        self._models.pop(key, None)

    def model(self, key: Key) -> ModelView | None:
        return self._models.get(key)

    def keys(self, namespace: str | None) -> list[Key]:
        return [k for k in self._models if namespace in (None, k[0])]

    def table(self, key: Key, pods: Collection[PodView]) -> PlacementTable | None:
        """None: placement is off for this model (every adapter on every pod)."""
        view = self._models.get(key)
        replicas = view.spec.placed_replicas() if view is not None else 0
        if replicas == 0:
            return None
        return table((p.name for p in pods if p.active), replicas)

    def placed(
        self, key: Key, adapter_name: str | None, pods: Collection[PodView]
    ) -> tuple[list[PodView], AdapterPlacement]:
        """The pods that hold `adapter_name` (and its placement, for status)."""
        if adapter_name is None or user_of(adapter_name) is None:
            return list(pods), AdapterPlacement.everywhere()
        where = placement_of(adapter_name, self.table(key, pods))
        if where.all_replicas:
            return list(pods), where
        return [p for p in pods if p.name in where.pods], where


def cold_owners(
    placed: PlacementTable, pods: Collection[PodView], adapters: Sequence[AdapterRecord]
) -> set[tuple[int, str]]:
    """(slot, pod) pairs the router must pass over for now: the pod owns the slot but has not loaded
    an adapter of it that another pod already serves (it just joined, or the slot just moved to it).
    A brand-new adapter makes nobody cold: its owners are where it arrives first."""
    cold: set[tuple[int, str]] = set()
    for record in adapters:
        name = record.adapter_name
        user = user_of(name) if name is not None else None
        if name is None or user is None or record.target is None or record.deleting:
            continue
        states = {p.name: report.state for p in pods if (report := p.report.adapters.get(name)) is not None}
        if "Loaded" not in states.values():
            continue
        slot = slot_of(user)
        cold.update((slot, pod) for pod in placed.owners[slot] if states.get(pod) not in ("Loaded", "Failed"))
    return cold


def placed_servers(
    view: ModelView, placed: PlacementTable | None, pods: Collection[PodView], adapters: Sequence[AdapterRecord]
) -> PlacedServers | None:
    """The router's servers and owners' map for this model (None: placement is off)."""
    if placed is None:
        return None
    cold = cold_owners(placed, pods, adapters)
    owners = tuple(
        tuple(o for o in slot_owners if (slot, o) not in cold) for slot, slot_owners in enumerate(placed.owners)
    )
    routed = replace(placed, owners=owners)
    ready = sorted((p for p in pods if p.active and p.ready and p.ip), key=lambda p: p.name)
    servers = tuple(haproxy.StaticServer(p.name, str(p.ip), view.spec.port) for p in ready)
    return PlacedServers(servers, routed.map_text(), placed.replicas)


class RouterSync:
    """Keeps each placed model's router configuration equal to its pods' (debounced, level-based)."""

    def __init__(
        self,
        kube: KubeClient,
        placements: Placements,
        pods_of: PodsOf,
        adapters_of: AdaptersOf,
        *,
        delay_s: float = 1.0,
        min_interval_s: float = 10.0,
    ) -> None:
        self.kube = kube
        self.placements = placements
        self.pods_of = pods_of
        self.adapters_of = adapters_of
        self.min_interval_s = min_interval_s
        self._applied: dict[Key, str] = {}  # the ConfigMap data last applied
        self._applied_at: dict[Key, float] = {}  # monotonic
        self._queue: KeyedQueue[Key] = KeyedQueue(self._sync, delay_s=delay_s, name="router-sync")

    def servers(self, key: Key) -> PlacedServers | None:
        view = self.placements.model(key)
        if view is None or not view.spec.router.enabled:
            return None
        pods = list(self.pods_of(*key))
        return placed_servers(view, self.placements.table(key, pods), pods, self.adapters_of(*key))

    def mark(self, key: Key) -> None:
        view = self.placements.model(key)
        if view is not None and view.spec.placed_replicas():
            self._queue.mark(key)

    def applied(self, key: Key, config_map: dict[str, Any]) -> None:
        """This ConfigMap was applied (by the sync, or by the model's handler itself)."""
        self._applied[key] = repr(sorted(config_map["data"].items()))
        self._applied_at[key] = time.monotonic()

    def forget(self, key: Key) -> None:
        self._applied.pop(key, None)
        self._applied_at.pop(key, None)
        self._queue.forget(key)

    async def _sync(self, key: Key) -> None:
        view = self.placements.model(key)
        placed = self.servers(key)
        if view is None or placed is None:
            return
        config_map = build_config_map(view.owner, view.spec, placed)
        if self._applied.get(key) == repr(sorted(config_map["data"].items())):
            return
        # A bulk apply changes the owners' map with every adapter one owner loads before the
        # other: at most one apply per interval (each rolls the routers), with the latest map.
        wait = self._applied_at.get(key, -1e9) + self.min_interval_s - time.monotonic()
        if wait > 0:
            self._queue.mark_later(key, wait)
            return
        try:
            for manifest in (config_map, build_router_deployment(view.owner, view.spec, config_map)):
                meta = manifest["metadata"]
                path = object_path(manifest["kind"], meta["namespace"], meta["name"])
                await self.kube.apply(path, manifest, field_manager=r.FIELD_MANAGER)
        except ApiError as exc:
            log.warning("router of model %s/%s not updated, retrying: %s", key[0], key[1], exc)
            self._queue.mark_later(key, 5.0)
            return
        self.applied(key, config_map)

    async def close(self) -> None:
        await self._queue.close()
