"""One active operator at a time: a coordination.k8s.io Lease, held by renewing it.

Like client-go's leader election, a candidate judges expiry by how long it has seen
the Lease unchanged on its own clock (never by comparing clocks across machines).
The leader may act until its renew deadline: the start of its last successful renewal
plus `renew_deadline_s`, well inside the lease duration, so it has stopped acting
before any standby can see the Lease expire. No renewal call may outlive that
deadline (its timeout is the time left), and when the deadline passes the leader stops
at once (`on_lost`), even when it wakes from a freeze long after the deadline: the
deadline timer is due before any coroutine the freeze interrupted resumes. A leader
that shuts down cleanly releases the Lease so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from saigon_contract.kube import ApiError, Credentials, KubeClient, object_path

from saigon_operator import metrics

log = logging.getLogger(__name__)


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Taken(Exception):
    pass


@dataclass
class LeaseSettings:
    """client-go's defaults are 15 s / 10 s / 2 s; `for_duration` keeps their proportions."""

    namespace: str
    name: str = "saigon-operator"
    duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_every_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_every_s < self.renew_deadline_s < self.duration_s:
            raise ValueError("lease settings need 0 < retry period < renew deadline < lease duration")

    @classmethod
    def for_duration(cls, namespace: str, name: str, duration_s: float) -> LeaseSettings:
        return cls(namespace, name, duration_s, renew_deadline_s=duration_s * 2 / 3, retry_every_s=duration_s / 7.5)


class NotLeading(ApiError):
    """A write refused by this process itself: its renew deadline passed."""

    def __init__(self) -> None:
        super().__init__(503, "NotLeading", "this operator's leader lease ran out; it no longer acts")


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
        self._written: dict[str, Any] | None = None  # the Lease as this leader last wrote it
        self.leading = False
        self.deadline = 0.0  # on `clock`: when this leader must have stopped acting
        self.on_lost: Callable[[], None] = lambda: None
        self._watchdog: asyncio.TimerHandle | None = None

    async def acquire(self) -> None:
        """Returns once this process holds the Lease."""
        while True:
            if await self.try_acquire():
                return
            await asyncio.sleep(self.settings.retry_every_s)

    def may_act(self) -> bool:
        return self.leading and self.clock() < self.deadline

    def check_may_act(self) -> None:
        """For the operator's API client: refuses a write once the renew deadline has passed."""
        if not self.may_act():
            raise NotLeading()

    async def try_acquire(self) -> bool:
        started = self.clock()
        try:
            lease = await self.kube.get_or_none(self.path)
            if lease is None:
                self._written = await self.kube.create(self.path.rsplit("/", 1)[0], self._lease(None, transitions=0))
                return self._won(started)
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity")
            version = lease["metadata"]["resourceVersion"]
            if holder and holder != self.identity and not self._expired(version, spec):
                return False
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
            self._written = await self.kube.replace(self.path, self._lease(lease, transitions=transitions))
            return self._won(started)
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

    def _won(self, started: float) -> bool:
        self.leading = True
        self._extend(started)
        metrics.LEADER.set(1)
        log.info("leader election: %s now leads", self.identity)
        return True

    def _extend(self, renewal_started: float) -> None:
        """The Lease was written by a call that started at `renewal_started`: act until the new deadline."""
        self.deadline = renewal_started + self.settings.renew_deadline_s
        self.arm_watchdog()

    def arm_watchdog(self) -> None:
        """(Re)starts the deadline timer on the running loop: the loop that renews."""
        self.disarm_watchdog()
        self._watchdog = asyncio.get_running_loop().call_later(self.until_deadline(), self._deadline_check)

    def until_deadline(self) -> float:
        return max(0.0, self.deadline - self.clock())

    def disarm_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _deadline_check(self) -> None:
        if self.leading and self.clock() >= self.deadline:
            self.step_down("the renew deadline passed")

    async def hold(self) -> None:
        """Renews every retry period until the Lease is lost or the renew deadline passes; then returns."""
        while self.leading:
            await asyncio.sleep(self.settings.retry_every_s)
            left = self.deadline - self.clock()
            if left <= 0 or not self.leading:
                break
            started = self.clock()
            try:
                async with asyncio.timeout(left):
                    renewed = await self._renew()
            except TimeoutError:
                renewed = False
            except _Taken as exc:
                self.step_down(f"the lease is now held by {exc}")
                return
            if renewed and self.leading:
                self._extend(started)
        self.step_down("the renew deadline passed")

    def step_down(self, why: str) -> None:
        self.disarm_watchdog()
        self._written = None
        if not self.leading:
            return
        self.leading = False
        metrics.LEADER.set(0)
        log.error("leader election: %s; stepping down", why)
        self.on_lost()

    async def _renew(self) -> bool:
        """As client-go does: first an update of the Lease as this leader last wrote it (one request);
        only when that conflicts, a read, and an update if the Lease is still this leader's."""
        try:
            if self._written is not None:
                try:
                    self._written = await self.kube.replace(self.path, _renewed(self._written))
                    return True
                except ApiError as exc:
                    if exc.status != 409:
                        raise
                    self._written = None
            lease = await self.kube.get(self.path)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                raise _Taken(spec.get("holderIdentity") or "nobody")
            self._written = await self.kube.replace(self.path, _renewed(lease))
            return True
        except ApiError as exc:
            log.warning("leader election: renewal failed: %s", exc)
            return False

    async def release(self) -> None:
        if not self.leading:
            return
        self.leading = False
        metrics.LEADER.set(0)
        self.disarm_watchdog()
        try:
            lease = await self.kube.get(self.path)
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                lease["spec"]["leaseDurationSeconds"] = 1
                await self.kube.replace(self.path, lease)
        except ApiError as exc:
            log.warning("leader election: could not release the lease: %s", exc)


def _renewed(lease: dict[str, Any]) -> dict[str, Any]:
    return {**lease, "spec": {**(lease.get("spec") or {}), "renewTime": _micro_now()}}


class RenewalThread:
    """Holds the Lease from a thread and event loop of its own, with its own API connection.

    On the operator's loop a renewal waits behind whatever runs there; in a bulk apply of
    thousands of adapters (kopf's workers, decoding watch events, status writes) that wait
    outlived the renew deadline and the leader stepped down although the API server answered
    its renewals in milliseconds. The write guard (`may_act`) still reads the deadline on every
    write from any thread, so a frozen process stays fenced."""

    def __init__(self, elector: LeaderElector, credentials: Credentials) -> None:
        self.elector = elector
        self.credentials = credentials
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-renewal", daemon=True)
        self._fence: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Called on the operator's loop, which keeps a deadline timer of its own: after a freeze
        (SIGSTOP, a stalled VM) that timer is due before any coroutine the freeze interrupted
        resumes there, so kopf's workers, whose writes the guard does not see, never act past
        the deadline; the renewal thread's timer alone would race them."""
        self.elector.disarm_watchdog()
        self._fence = asyncio.get_running_loop().call_later(self.elector.until_deadline(), self._check_fence)
        self._thread.start()
        self._ready.wait()

    def _check_fence(self) -> None:
        """The renewals move the deadline on their thread: step down if it passed, else look again then."""
        if not self.elector.leading:
            return
        if self.elector.until_deadline() <= 0:
            self.elector.step_down("the renew deadline passed")
            return
        self._fence = asyncio.get_running_loop().call_later(self.elector.until_deadline(), self._check_fence)

    async def wait(self) -> None:
        """Returns (on the caller's loop) once holding ended: the Lease was lost, or `stop`."""
        await asyncio.to_thread(self._thread.join)

    def stop(self) -> None:
        if self._fence is not None:
            self._fence.cancel()
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        asyncio.run(self._hold())

    async def _hold(self) -> None:
        shared = self.elector.kube
        try:
            kube = KubeClient(self.credentials)
            self.elector.kube = kube
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            self.elector.arm_watchdog()
        finally:
            self._ready.set()
        try:
            await self.elector.hold()
        except asyncio.CancelledError:
            pass
        finally:
            self.elector.disarm_watchdog()
            self.elector.kube = shared
            await kube.close()
