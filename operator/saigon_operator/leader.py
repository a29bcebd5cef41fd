"""One active operator at a time: a coordination.k8s.io Lease, held by renewing it.

Like client-go's leader election, a candidate judges expiry by how long it has seen
the Lease unchanged on its own clock (never by comparing clocks across machines).
A leader that cannot renew within the lease duration stops leading; a leader that
shuts down cleanly releases the Lease so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from saigon_contract.kube import ApiError, KubeClient, object_path

from saigon_operator import metrics

log = logging.getLogger(__name__)


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Taken(Exception):
    pass


@dataclass
class LeaseSettings:
    namespace: str
    name: str = "saigon-operator"
    duration_s: float = 15.0
    renew_every_s: float = 5.0
    retry_every_s: float = 2.0


class LeaderElector:
    def __init__(
        self, kube: KubeClient, settings: LeaseSettings, identity: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.identity = identity
        self.clock = clock
        self.path = object_path("Lease", settings.namespace, settings.name)
        self._observed: tuple[str, float] | None = None  # (resourceVersion, when first seen)
        self.leading = False

    async def acquire(self) -> None:
        """Returns once this process holds the Lease."""
        while True:
            if await self.try_acquire():
                return
            await asyncio.sleep(self.settings.retry_every_s)

    async def try_acquire(self) -> bool:
        try:
            lease = await self.kube.get_or_none(self.path)
            if lease is None:
                await self.kube.create(self.path.rsplit("/", 1)[0], self._lease(None, transitions=0))
                return self._won()
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity")
            version = lease["metadata"]["resourceVersion"]
            if holder and holder != self.identity and not self._expired(version, spec):
                return False
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
            await self.kube.replace(self.path, self._lease(lease, transitions=transitions))
            return self._won()
        except ApiError as exc:
            if exc.status != 409:  # 409: another candidate was faster
                log.warning("leader election: %s", exc)
            return False

    def _expired(self, version: str, spec: dict[str, Any]) -> bool:
        now = self.clock()
        if self._observed is None or self._observed[0] != version:
            self._observed = (version, now)
        duration = float(spec.get("leaseDurationSeconds") or self.settings.duration_s)
        return now - self._observed[1] > duration

    def _lease(self, current: dict[str, Any] | None, *, transitions: int) -> dict[str, Any]:
        now = _micro_now()
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.settings.name, "namespace": self.settings.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.settings.duration_s),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        }
        if current is not None:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return body

    def _won(self) -> bool:
        self.leading = True
        metrics.LEADER.set(1)
        log.info("leader election: %s now leads", self.identity)
        return True

    async def hold(self) -> None:
        """Renews until renewal fails for longer than the lease duration; then returns (leadership lost)."""
        last_renewed = self.clock()
        while True:
            await asyncio.sleep(self.settings.renew_every_s)
            try:
                renewed = await self._renew()
            except _Taken as exc:
                self._step_down(f"the lease is now held by {exc}")
                return
            if renewed:
                last_renewed = self.clock()
            elif self.clock() - last_renewed > self.settings.duration_s:
                self._step_down("could not renew the lease in time")
                return

    def _step_down(self, why: str) -> None:
        self.leading = False
        metrics.LEADER.set(0)
        log.error("leader election: %s; stepping down", why)

    async def _renew(self) -> bool:
        try:
            lease = await self.kube.get(self.path)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                raise _Taken(spec.get("holderIdentity") or "nobody")
            spec["renewTime"] = _micro_now()
            await self.kube.replace(self.path, lease)
            return True
        except ApiError as exc:
            log.warning("leader election: renewal failed: %s", exc)
            return False

    async def release(self) -> None:
        if not self.leading:
            return
        self.leading = False
        metrics.LEADER.set(0)
        try:
            lease = await self.kube.get(self.path)
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                lease["spec"]["leaseDurationSeconds"] = 1
                await self.kube.replace(self.path, lease)
        except ApiError as exc:
            log.warning("leader election: could not release the lease: %s", exc)
