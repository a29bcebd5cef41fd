"""Where each adapter lives: which runtime pods hold a user's adapter, so that the router's
requests for that user land where it already is.

A fixed table of SLOTS slots. A user's slot is `crc32(user id) mod SLOTS`, which HAProxy computes
bit for bit with its `crc32,mod(SLOTS)` converters (tests/test_router_haproxy.py checks it against
a real HAProxy); a slot's owners are `replicas` distinct pods chosen by rendezvous hashing
(highest random weight) over the pod names, with bounded loads. Adding or removing a pod moves only
the slots that pod gains or loses (about 1/N of them), so only those users' adapters move.
Shared adapters (`global`, `domain_<name>`) live on every pod.

Pure functions of the pod names: the operator, the router's map and the tests compute the same
table from the same names.
"""

from __future__ import annotations

import functools
import hashlib
import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SLOTS = 1024
DEFAULT_REPLICAS = 2
# No pod owns more than this times its fair share of slots (k * SLOTS / pods).
LOAD_FACTOR = 1.25
USER_PREFIX = "user_"
# Between two owners in a line of the router's map (pod names never hold it).
MAP_SEPARATOR = "|"


def slot_of(user_id: str) -> int:
    """HAProxy: `req.hdr(X-Saigon-User),crc32,mod(SLOTS)` (CRC-32/ISO-HDLC, as zlib's)."""
    return zlib.crc32(user_id.encode()) % SLOTS


def user_of(adapter_name: str) -> str | None:
    """The user a user adapter belongs to; None for shared adapters (global, domain_*)."""
    return adapter_name[len(USER_PREFIX) :] if adapter_name.startswith(USER_PREFIX) else None


def _weight(slot: int, pod: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{slot}/{pod}".encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True)
class PlacementTable:
    pods: tuple[str, ...]  # the members, sorted
    replicas: int  # owners per slot (fewer when there are fewer pods)
    owners: tuple[tuple[str, ...], ...]  # per slot, in the order the router tries them

    def owners_of(self, adapter_name: str) -> tuple[str, ...] | None:
        """The pods that hold `adapter_name`; None: every pod (a shared adapter)."""
        user = user_of(adapter_name)
        return None if user is None else self.owners[slot_of(user)]

    def map_text(self) -> str:
        """HAProxy's map file: `<slot> <owner>|<owner>` per line (slots without owners left out)."""
        return "".join(f"{slot} {MAP_SEPARATOR.join(o)}\n" for slot, o in enumerate(self.owners) if o)

    def load(self) -> dict[str, int]:
        """Slots each pod owns."""
        counts = dict.fromkeys(self.pods, 0)
        for owners in self.owners:
            for pod in owners:
                counts[pod] += 1
        return counts


def table(pods: Iterable[str], replicas: int = DEFAULT_REPLICAS) -> PlacementTable:
    return _table(tuple(sorted(set(pods))), replicas)


@functools.lru_cache(maxsize=32)
def _table(pods: tuple[str, ...], replicas: int) -> PlacementTable:
    k = max(0, min(replicas, len(pods)))
    if k == 0:
        return PlacementTable(pods, 0, ((),) * SLOTS)
    cap = math.ceil(LOAD_FACTOR * SLOTS * k / len(pods))
    load = dict.fromkeys(pods, 0)
    owners = []
    for slot in range(SLOTS):
        ranked = sorted(pods, key=lambda pod: _weight(slot, pod), reverse=True)
        chosen = [pod for pod in ranked if load[pod] < cap][:k]
        for pod in chosen:
            load[pod] += 1
        owners.append(tuple(chosen))
    return PlacementTable(pods, k, tuple(owners))


# --- status.placement of a SaigonAdapter: written by the operator, read by the agents ---------------


class AdapterPlacement(BaseModel):
    """`status.placement`: every replica (`allReplicas`), or the `pods` of the user's `slot`, in the
    order the router tries them. Absent or unreadable: every replica (an operator without placement)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    all_replicas: bool = Field(default=False, validation_alias="allReplicas", serialization_alias="allReplicas")
    slot: int | None = Field(default=None, ge=0, lt=SLOTS)
    pods: tuple[str, ...] = ()

    def holds(self, pod: str) -> bool:
        return self.all_replicas or pod in self.pods

    @classmethod
    def everywhere(cls) -> AdapterPlacement:
        return cls(all_replicas=True)

    @classmethod
    def read(cls, raw: object) -> AdapterPlacement:
        if not isinstance(raw, Mapping):
            return cls.everywhere()
        try:
            return cls.model_validate(raw)
        except ValidationError:
            return cls.everywhere()

    def to_status(self) -> dict[str, Any]:
        if self.all_replicas:
            return {"allReplicas": True, "slot": None, "pods": None}
        return {"allReplicas": False, "slot": self.slot, "pods": list(self.pods)}


def placement_of(adapter_name: str, placed: PlacementTable | None) -> AdapterPlacement:
    """An adapter's placement under `placed` (None: placement is off, every adapter everywhere)."""
    user = user_of(adapter_name)
    if placed is None or user is None:
        return AdapterPlacement.everywhere()
    slot = slot_of(user)
    return AdapterPlacement(slot=slot, pods=placed.owners[slot])
