"""Converges this pod onto its desired adapters, one independent task per adapter name.

Per adapter: fetch and verify into the store, load into the runtime (which makes the
version current atomically), then flip `active`. A failure is reported for that
adapter alone; transient ones are retried with backoff, permanent ones wait for a
new target. The pod's readiness gate opens once every adapter it must serve has
been handled (loaded, or failed for a reason of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from saigon_contract.demand import DemandResult
from saigon_contract.reports import AdapterReport, State
from saigon_contract.specs import Target
from saigon_contract.status import now_iso
from saigon_contract.workqueue import KeyedQueue

from saigon_agent.desired import Desired, DesiredBook
from saigon_agent.errors import RuntimeRejected, RuntimeUnavailable, SyncError
from saigon_agent.gates import PromotionGates
from saigon_agent.metrics import OK, AgentMetrics
from saigon_agent.reporter import PodReporter
from saigon_agent.runtime_client import RuntimeAdapter, RuntimeAdmin
from saigon_agent.sources import Materializer
from saigon_agent.store import AdapterStore

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0


@dataclass(frozen=True)
class Served:
    version: str
    digest: str
    loaded_at: str | None
    # The syncer's load count when this became known: a runtime listing asked for before then
    # may not show it yet, so it cannot tell that the runtime lost it.
    seq: int = 0


@dataclass
class Failure:
    fingerprint: str
    transient: bool
    attempts: int


class Syncer:
    def __init__(
        self,
        *,
        store: AdapterStore,
        materializer: Materializer,
        runtime: RuntimeAdmin,
        reporter: PodReporter,
        concurrency: int = 4,
        backoff_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        pod: str = "",
        linger_s: float = 60.0,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.metrics = metrics or materializer.metrics
        self._sync_started: dict[str, float] = {}  # per adapter: when the current attempt began
        self.book = DesiredBook(pod)
        self.store = store
        self.materializer = materializer
        self.runtime = runtime
        self.reporter = reporter
        self.backoff_s = backoff_s
        self._fetch_slots = asyncio.Semaphore(concurrency)
        self._queue: KeyedQueue[str] = KeyedQueue(self._sync, name="sync")
        self._served: dict[str, Served] = {}
        self._loads = 0  # loads that returned (and adoptions): orders Served against listings
        self._failures: dict[str, Failure] = {}
        self._runtime_view: dict[str, RuntimeAdapter] | None = None
        self._runtime_up = asyncio.Event()
        self._first_probe = asyncio.Event()  # set once the runtime has been asked at least once
        self._listed = False
        self._clock = clock
        # An adapter placed elsewhere stays this long (the router may still send its user here
        # until it follows the new placement), then goes.
        self.linger_s = linger_s
        self._elsewhere_since: dict[str, float] = {}
        self._demanded: dict[str, float] = {}  # adapters placed elsewhere, loaded here on demand: when
        self.gates = PromotionGates(runtime)

    # --- inputs --------------------------------------------------------------------------------

    def on_object(self, obj: dict[str, object]) -> None:
        self.kick(self.book.upsert(obj))

    def on_deleted(self, obj: dict[str, object]) -> None:
        self.kick(self.book.delete(obj))

    async def on_relist(self, objs: list[dict[str, object]]) -> None:
        changed = self.book.replace_all(objs)
        first = not self._listed
        self._listed = True
        if first:
            # Files and reports of adapters whose objects vanished while this agent was away.
            changed |= (set(self.store.names()) | self.reporter.names()) - self.book.names()
            changed |= self.book.names()
        self.kick(changed)
        self._update_synced()

    def kick(self, names: set[str] | list[str]) -> None:
        for name in names:
            self._queue.mark(name)

    # --- the runtime, watched in the background ------------------------------------------------

    async def watch_runtime(self, interval_s: float, probe_s: float = 0.5) -> None:
        """Keeps a view of what the runtime serves; reloads what it lost (e.g. it restarted)."""
        while True:
            loads_before = self._loads
            try:
                view = await self.runtime.adapters()
            except RuntimeUnavailable:
                if self._runtime_up.is_set():
                    log.warning("runtime admin API went away")
                self._runtime_up.clear()
                self._first_probe.set()
                await asyncio.sleep(probe_s)
                continue
            came_up = not self._runtime_up.is_set()
            self._runtime_view = view
            self._runtime_up.set()
            self._first_probe.set()
            self._update_synced()
            lost = [
                name
                for name, served in self._served.items()
                if served.seq <= loads_before and ((seen := view.get(name)) is None or seen.version != served.version)
            ]
            if lost:
                log.warning("runtime no longer serves %d adapters; reloading them", len(lost))
                for name in lost:
                    self._served.pop(name, None)
                # Readiness is about what this pod must serve; one lingering here is not part of it.
                if any(self.book.decide(name).action == "serve" for name in lost):
                    self.reporter.set_synced(False)
            stray = [n for n in view if self._listed and self.book.decide(n).action == "remove"]
            retry = [n for n, f in self._failures.items() if f.transient]
            if came_up or lost or stray or retry:
                self.kick(set(lost) | set(stray) | set(retry) | (self.book.names() if came_up else set()))
            await asyncio.sleep(interval_s if not came_up else probe_s)

    # --- per adapter ---------------------------------------------------------------------------

    async def _sync(self, name: str) -> None:
        try:
            await self._converge(name)
        except Exception:  # a bug must not kill the loop for every other adapter
            log.exception("unexpected error syncing an adapter of %s", self._label(name))
            self._fail(name, None, SyncError("internal agent error", reason="InternalError", transient=True))
        self._update_synced()

    def _label(self, name: str) -> str:
        decision = self.book.decide(name)
        return f"SaigonAdapter {decision.desired.object_name}" if decision.desired else "a removed SaigonAdapter"

    async def _converge(self, name: str) -> None:
        decision = self.book.decide(name)
        if decision.action == "keep":
            return
        if decision.action == "elsewhere":
            if not self._held_on_demand(name):
                await self._let_go(name)
                return
        else:
            self._elsewhere_since.pop(name, None)
        if decision.action == "remove" or decision.desired is None or decision.desired.target is None:
            if self._listed or decision.desired is not None:
                await self._remove(name)
            return
        target = decision.desired.target
        fingerprint = target.fingerprint()
        failure = self._failures.get(name)
        if failure is not None and failure.fingerprint != fingerprint:
            self._failures.pop(name, None)
            failure = None
        if failure is not None and not failure.transient:
            return
        # After an agent restart the runtime may already serve this: ask it before redoing work.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_probe.wait(), timeout=5)
        if self._already_served(name, target):
            await self._after_served(name, decision.desired)
            return
        self._sync_started[name] = self._clock()
        try:
            async with self._fetch_slots:
                if failure is None:  # a retry keeps showing the failure until it succeeds
                    self._report(name, "Fetching", target)
                installed = await self.materializer.install(name, target)
        except SyncError as exc:
            self._fail(name, target, exc)
            return
        desired = decision.desired
        if desired.candidate and desired.evaluation:
            # A candidate answers its evaluation prompts (pinned to it) before it takes traffic here.
            await self._runtime_up.wait()
            self._report(name, "Loading", target)
            self.gates.drop(name)
            gate = await self.gates.evaluate(name, target.version, desired.evaluation, self._label(name))
            passed, detail = gate.passed, gate.detail
            if passed is None:
                unavailable = SyncError("the evaluation could not run", reason="EvaluationUnavailable", transient=True)
                self._fail(name, target, unavailable, state="Loading")
                return
            if not passed:
                self._fail(name, target, SyncError(detail or "evaluation failed", reason="EvaluationFailed"))
                return
        # `active` flips before the load call: the runtime reads it (and must not have to write
        # it: its view of the adapters directory is read-only), so both agree once load returns.
        before = self.store.active_version(name)
        await self.materializer.background.run(self.store.activate, name, target.version)  # fsyncs
        if failure is None:
            self._report(name, "Loading", target)
        try:
            await self._runtime_up.wait()
            loaded_at = await self.runtime.load(name, target.version, str(installed.path))
        except RuntimeRejected as exc:
            self.metrics.load(name, exc.reason)
            self._restore_active(name, before, rejected=target.version)
            self._fail(name, target, exc)
            return
        except RuntimeUnavailable as exc:
            self.metrics.load(name, exc.reason)
            self._runtime_up.clear()
            self._fail(name, target, exc, state="Loading")
            return
        self.metrics.load(name, OK)
        if (started := self._sync_started.pop(name, None)) is not None:
            self.metrics.synced(self._clock() - started, ok=True)
        previous = self._served.get(name)
        self._loads += 1
        served = Served(target.version, installed.digest, loaded_at or now_iso(), self._loads)
        self._served[name] = served
        self._failures.pop(name, None)
        self._report_served(name, target, served)
        log.info("%s: version %s loaded", self._label(name), target.version)
        await self._after_served(name, decision.desired, previous.version if previous else None)

    async def _after_served(self, name: str, desired: Desired, previous: str | None = None) -> None:
        """Once the pod serves its target: run a candidate's evaluation prompts, drop unneeded versions."""
        target = desired.target
        assert target is not None
        if self.gates.needs_evaluation(name, desired):
            await self.gates.evaluate(name, target.version, desired.evaluation, self._label(name))
            served = self._served.get(name)
            if served is not None and served.version == target.version:
                self._report_served(name, target, served)
        await self._collect(name, desired, previous)

    async def _collect(self, name: str, desired: Desired, previous: str | None) -> None:
        """Removes versions no pod needs any more: not served, not retained for a rollback.

        Without a `retain` list (an operator from before promotions) the previous version stays.
        """
        target = desired.target
        assert target is not None
        if desired.retain is None and previous is None:
            return
        served = self._served.get(name)
        keep = set(desired.retain) if desired.retain is not None else ({previous} if previous else set())
        keep |= {target.version} | ({served.version} if served else set())
        active = self.store.active_version(name)
        for version in self.store.versions(name):
            if version in keep or version == active:
                continue
            # Frees the runtime's memory copy first; in-flight requests keep their device copy.
            with contextlib.suppress(RuntimeUnavailable):
                await self.runtime.unload(name, version)
                self.metrics.unload()
            await self.materializer.background.run(self.store.remove_version, name, version)
            log.info("%s: removed version %s", self._label(name), version)

    async def watch_stats(self, interval_s: float) -> None:
        """While a candidate with metric gates is assigned here, reports its request figures."""
        while True:
            await asyncio.sleep(interval_s)
            for name in sorted(self.book.collecting()):
                decision = self.book.decide(name)
                desired = decision.desired
                served = self._served.get(name)
                if desired is None or not desired.collect_stats or desired.target is None or served is None:
                    continue
                if served.version == desired.target.version and await self.gates.collect_stats(name, served.version):
                    self._report_served(name, desired.target, served)

    def _restore_active(self, name: str, before: str | None, *, rejected: str) -> None:
        if before is not None and before != rejected:
            self.store.activate(name, before)
        else:
            self.store.deactivate(name)
        self.store.remove_version(name, rejected)
        self.store.drop_if_empty(name)

    def _already_served(self, name: str, target: Target) -> bool:
        served = self._served.get(name)
        if served is None:
            served = self._adopt(name, target)
        if served is None or served.version != target.version:
            return False
        if target.sha256 is not None and served.digest != target.sha256:
            return False
        self._report_served(name, target, served)
        return True

    def _adopt(self, name: str, target: Target) -> Served | None:
        """After an agent restart: the runtime already serves what the store holds for this target."""
        seen = (self._runtime_view or {}).get(name)
        digest = self.store.installed_digest(name, target.version)
        if seen is None or seen.version != target.version or seen.error or digest is None:
            return None
        if self.store.active_version(name) != target.version:
            return None
        self._loads += 1
        served = Served(target.version, digest, seen.loaded_at, self._loads)
        self._served[name] = served
        return served

    async def demand(self, name: str, timeout_s: float) -> DemandResult:
        """Loads an adapter placed on other pods now (the router sent its user here: they are down)."""
        decision = self.book.decide(name)
        desired = decision.desired
        if decision.action not in ("serve", "elsewhere") or desired is None or desired.target is None:
            return DemandResult(state="unknown")
        target = desired.target
        if decision.action == "elsewhere":
            self._demanded[name] = self._clock()
            self.kick([name])
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            served = self._served.get(name)
            if served is not None and served.version == target.version:
                return DemandResult(state="loaded", version=served.version)
            failure = self._failures.get(name)
            if failure is not None and not failure.transient and failure.fingerprint == target.fingerprint():
                report = self.reporter.get(name)
                return DemandResult(state="failed", reason=report.reason if report is not None else None)
            if asyncio.get_running_loop().time() >= deadline:
                return DemandResult(state="pending")
            await asyncio.sleep(0.05)

    def _held_on_demand(self, name: str) -> bool:
        """Demanded within the linger time: kept (and looked at again when that runs out)."""
        since = self._demanded.get(name)
        if since is None:
            return False
        left = since + self.linger_s - self._clock()
        if left <= 0:
            self._demanded.pop(name, None)
            return False
        self._queue.mark_later(name, left)
        return True

    async def _let_go(self, name: str) -> None:
        """An adapter now placed on other pods: removed once it has lingered `linger_s`."""
        if not self._knows(name):
            self._elsewhere_since.pop(name, None)
            return
        since = self._elsewhere_since.setdefault(name, self._clock())
        left = since + self.linger_s - self._clock()
        if left > 0:
            self._queue.mark_later(name, left)
            return
        self._elsewhere_since.pop(name, None)
        await self._remove(name)

    def _knows(self, name: str) -> bool:
        return (
            self.reporter.get(name) is not None
            or self.store.has(name)
            or name in self._served
            or (self._runtime_view is not None and name in self._runtime_view)
        )

    async def _remove(self, name: str) -> None:
        if not self._knows(name):
            return
        current = self.reporter.get(name)
        self.reporter.set(name, AdapterReport(state="Unloading", version=current.version if current else None))
        # Forgotten before the unload: a runtime listing taken meanwhile must not read it as lost.
        self._served.pop(name, None)
        if self._runtime_up.is_set():
            try:
                await self.runtime.unload(name)
                self.metrics.unload()
            except RuntimeUnavailable as exc:
                self._runtime_up.clear()
                self._fail(name, None, exc, state="Unloading")
                return
        await self.materializer.background.run(self.store.remove, name)
        self._demanded.pop(name, None)
        self._failures.pop(name, None)
        self.gates.drop(name)
        if self._runtime_view is not None:
            self._runtime_view.pop(name, None)
        self.reporter.remove(name)
        log.info("%s: unloaded and removed", self._label(name))

    # --- reporting -----------------------------------------------------------------------------

    def _report(self, name: str, state: State, target: Target) -> None:
        served = self._served.get(name)
        self.reporter.set(
            name,
            AdapterReport(
                state=state,
                target=target.version,
                version=served.version if served else None,
                digest=served.digest if served else None,
                loaded_at=served.loaded_at if served else None,
            ),
        )

    def _report_served(self, name: str, target: Target, served: Served) -> None:
        gate = self.gates.report(name, served.version) if served.version == target.version else None
        self.reporter.set(
            name,
            AdapterReport(
                state="Loaded",
                target=target.version,
                version=served.version,
                digest=served.digest,
                loaded_at=served.loaded_at,
                gate=gate,
            ),
        )

    def _fail(self, name: str, target: Target | None, exc: SyncError, *, state: State = "Failed") -> None:
        previous = self._failures.get(name)
        fingerprint = target.fingerprint() if target is not None else ""
        attempts = previous.attempts + 1 if previous and previous.fingerprint == fingerprint else 1
        self._failures[name] = Failure(fingerprint, exc.transient, attempts)
        if (started := self._sync_started.pop(name, None)) is not None:
            self.metrics.synced(self._clock() - started, ok=False)
        if exc.transient:
            self.metrics.retry(exc.reason)
        served = self._served.get(name)
        self.reporter.set(
            name,
            AdapterReport(
                state=state,
                target=target.version if target else None,
                version=served.version if served else None,
                digest=served.digest if served else None,
                loaded_at=served.loaded_at if served else None,
                reason=exc.reason,
                error=exc.message[:1000],
            ),
        )
        log.warning("%s: %s (%s)", self._label(name), exc.reason, "will retry" if exc.transient else "giving up")
        if exc.transient:
            self._queue.mark_later(name, min(self.backoff_s * 2 ** (attempts - 1), MAX_BACKOFF_S))

    def _update_synced(self) -> None:
        """Opens the readiness gate once every adapter to serve has a settled outcome."""
        if self.reporter.synced or not self._listed or not self._runtime_up.is_set():
            return
        for name in self.book.names():
            if self.book.decide(name).action != "serve":
                continue
            report = self.reporter.get(name)
            if report is None or report.state not in ("Loaded", "Failed"):
                return
        self.reporter.set_synced(True)

    # --- for tests and shutdown ----------------------------------------------------------------

    async def idle(self) -> None:
        await self._queue.idle()

    async def close(self) -> None:
        await self._queue.close()
