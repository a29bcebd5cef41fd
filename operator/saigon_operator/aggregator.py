"""The one writer of SaigonAdapter and SaigonModel status.

Handlers record what they decided (a validated target, an invalid spec, a deletion);
pod events mark the adapters whose per-pod reports changed. A flush loop then
recomputes those statuses from the pod index (kopf keeps it current) and patches
only what changed, posting Events on user-visible transitions. One writer means no
two handlers race on `status.conditions`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from saigon_operator import metrics
from saigon_operator import resources as r
from saigon_operator.events import EventRecorder
from saigon_operator.kube import ApiError, KubeClient, custom_path
from saigon_operator.promotion import Plan, PodInput, PromotionState, plan
from saigon_operator.retry import backoff
from saigon_operator.specs import Promotion, S3Policy, SpecError, Target
from saigon_operator.status import (
    AdapterFacts,
    ModelFacts,
    PodView,
    adapter_status,
    find_condition,
    model_status,
    now_iso,
    without_timestamps,
)

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
PodsOf = Callable[[str, str], Collection[PodView]]  # (namespace, model) -> the model's pods


@dataclass
class AdapterRecord:
    namespace: str
    name: str
    uid: str
    model: str
    generation: int | None = None
    adapter_name: str | None = None
    target: Target | None = None
    invalid: SpecError | None = None
    conflict_with: str | None = None
    deleting: bool = False
    written: dict[str, Any] = field(default_factory=dict)
    # The spec's version and promotion policy (None while invalid or in conflict): the planner
    # moves `promotion` towards `desired`; `target` is always the promotion's stable version.
    desired: Target | None = None
    policy: Promotion | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    promotion: PromotionState | None = None

    def facts(self, promotion: PromotionState | None = None) -> AdapterFacts:
        promotion = promotion or self.promotion
        return AdapterFacts(
            adapter_name=self.adapter_name,
            generation=self.generation,
            target=promotion.stable if promotion is not None else self.target,
            invalid=self.invalid,
            conflict_with=self.conflict_with,
            deleting=self.deleting,
            promotion=promotion,
            policy=self.policy,
        )

    def targets(self) -> list[Target]:
        """Every version pods may fetch for this adapter: the stable one, a candidate, the spec's."""
        found = [self.target, self.desired, self.promotion.candidate if self.promotion else None]
        return [t for t in found if t is not None]

    def next_promotion(self, pods: Collection[PodView], now: float) -> Plan | None:
        """Runs the promotion planner, when there is a valid spec to promote."""
        if self.desired is None or self.policy is None or self.deleting:
            return None
        inputs = [PodInput(p.name, p.report.adapters.get(self.adapter_name or "")) for p in pods if p.active]
        previous = self.promotion or PromotionState(stable=self.target)
        return plan(self.desired, self.policy, previous, inputs, now, self.annotations)

    def ref(self) -> dict[str, str]:
        return {
            "apiVersion": r.API_VERSION,
            "kind": r.ADAPTER_KIND,
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
        }


@dataclass
class ModelRecord:
    namespace: str
    name: str
    uid: str
    generation: int | None = None
    desired_replicas: int = 0
    spec_hash: str | None = None
    selector: str = ""
    invalid: SpecError | None = None
    apply_error: str | None = None
    written: dict[str, Any] = field(default_factory=dict)
    # The S3 credentials and endpoints its adapters may use (None: the spec is invalid or unseen).
    s3_policy: S3Policy | None = None

    def ref(self) -> dict[str, str]:
        return {
            "apiVersion": r.API_VERSION,
            "kind": r.MODEL_KIND,
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
        }


class Aggregator:
    def __init__(
        self,
        kube: KubeClient,
        events: EventRecorder,
        pods_of: PodsOf,
        *,
        debounce_s: float = 0.02,
        model_debounce_s: float = 1.0,
        concurrency: int = 16,
        retry_base_s: float = 1.0,
        retry_cap_s: float = 60.0,
    ) -> None:
        self.kube = kube
        self.events = events
        self.pods_of = pods_of
        self.debounce_s = debounce_s
        self.model_debounce_s = model_debounce_s
        self.adapters: dict[Key, AdapterRecord] = {}
        self.models: dict[Key, ModelRecord] = {}
        self._by_model: dict[Key, set[str]] = {}  # (ns, model) -> adapter object names
        self._last_pods: dict[Key, PodView] = {}  # (ns, pod) -> last view, to diff reports
        self._dirty_adapters: set[Key] = set()
        self._dirty_models: set[Key] = set()
        self._dirty_since: float | None = None
        self._wake = asyncio.Event()
        self._wake_models = asyncio.Event()
        self._locks: dict[Key, asyncio.Lock] = {}
        self._rechecks: dict[Key, asyncio.TimerHandle] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        # (kind, key) -> (failed attempts in a row, monotonic time before which no write is tried)
        self._failing: dict[tuple[str, Key], tuple[int, float]] = {}

    # --- what handlers tell us -------------------------------------------------------------------

    def put_adapter(self, record: AdapterRecord) -> AdapterRecord:
        key = (record.namespace, record.name)
        old = self.adapters.get(key)
        if old is not None and not record.written:
            record.written = old.written
        self.adapters[key] = record
        self._by_model.setdefault((record.namespace, record.model), set()).add(record.name)
        metrics.OBJECTS.labels("SaigonAdapter").set(len(self.adapters))
        self.mark_model((record.namespace, record.model))
        return record

    def forget_adapter(self, key: Key) -> None:
        record = self.adapters.pop(key, None)
        if record is not None:
            self._by_model.get((record.namespace, record.model), set()).discard(record.name)
            self.mark_model((record.namespace, record.model))
        self._dirty_adapters.discard(key)
        self._failing.pop(("adapter", key), None)
        handle = self._rechecks.pop(key, None)
        if handle is not None:
            handle.cancel()
        metrics.OBJECTS.labels("SaigonAdapter").set(len(self.adapters))

    def put_model(self, record: ModelRecord) -> ModelRecord:
        key = (record.namespace, record.name)
        old = self.models.get(key)
        if old is not None and not record.written:
            record.written = old.written
        self.models[key] = record
        metrics.OBJECTS.labels("SaigonModel").set(len(self.models))
        return record

    def forget_model(self, key: Key) -> None:
        self.models.pop(key, None)
        self._dirty_models.discard(key)
        self._failing.pop(("model", key), None)
        metrics.OBJECTS.labels("SaigonModel").set(len(self.models))

    def adapters_of(self, namespace: str, model: str) -> list[AdapterRecord]:
        names = self._by_model.get((namespace, model), set())
        return [self.adapters[(namespace, n)] for n in sorted(names) if (namespace, n) in self.adapters]

    # --- pods ------------------------------------------------------------------------------------

    def observe_pod(self, namespace: str, model: str, view: PodView | None, pod_name: str) -> None:
        """A pod changed (view) or vanished (None): mark what its change can affect."""
        key = (namespace, pod_name)
        old = self._last_pods.get(key)
        if view is None:
            self._last_pods.pop(key, None)
        else:
            self._last_pods[key] = view
        if old is not None and view is not None and old.active == view.active:
            changed = {
                n
                for n in set(old.report.adapters) | set(view.report.adapters)
                if old.report.adapters.get(n) != view.report.adapters.get(n)
            }
            affected = [a for a in self.adapters_of(namespace, model) if a.adapter_name in changed]
        elif (old is not None and old.active) or (view is not None and view.active):
            affected = self.adapters_of(namespace, model)  # a replica came or went
        else:
            affected = []
        for record in affected:
            self.mark_adapter((record.namespace, record.name))
        if old != view:
            self.mark_model((namespace, model))

    # --- flushing --------------------------------------------------------------------------------

    def mark_adapter(self, key: Key) -> None:
        self._dirty_adapters.add(key)
        if self._dirty_since is None:
            self._dirty_since = time.perf_counter()
        self._wake.set()

    def mark_model(self, key: Key) -> None:
        self._dirty_models.add(key)
        self._wake_models.set()

    async def run(self) -> None:
        await asyncio.gather(self._run_adapters(), self._run_models())

    async def _run_adapters(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.debounce_s)
            self._wake.clear()
            started, self._dirty_since = self._dirty_since, None
            adapters, self._dirty_adapters = self._dirty_adapters, set()
            await asyncio.gather(*(self._guarded(self.write_adapter, key) for key in adapters))
            if started is not None:
                metrics.STATUS_LAG.observe(time.perf_counter() - started)

    async def _run_models(self) -> None:
        # Model status (replica and adapter counts) changes with every adapter and pod event;
        # once a second is plenty for it, and spares the API server a write per adapter.
        while True:
            await self._wake_models.wait()
            await asyncio.sleep(self.model_debounce_s)
            self._wake_models.clear()
            models, self._dirty_models = self._dirty_models, set()
            await asyncio.gather(*(self._guarded(self.write_model, key) for key in models))

    async def _guarded(self, write: Callable[[Key], Any], key: Key) -> None:
        """One status write; a transient failure backs off exponentially, a permanent one is dropped
        (the next change to the object or its pods writes again)."""
        kind = "adapter" if write == self.write_adapter else "model"
        attempts, not_before = self._failing.get((kind, key), (0, 0.0))
        if time.monotonic() < not_before:
            return  # a retry is already scheduled; level-based, it writes the latest state
        async with self._slots:
            try:
                await write(key)
            except ApiError as exc:
                metrics.ERRORS.labels("status", exc.reason or str(exc.status)).inc()
                if not exc.transient:
                    self._failing.pop((kind, key), None)
                    if exc.status != 404:  # 404: the object is gone, nothing to tell
                        log.warning("status write for %s/%s refused, not retried: %s", key[0], key[1], exc)
                    return
                delay = backoff(attempts, self.retry_base_s, self.retry_cap_s)
                self._failing[(kind, key)] = (attempts + 1, time.monotonic() + delay)
                log.warning("status write for %s/%s failed, retry in %.0fs: %s", key[0], key[1], delay, exc)
                mark = self.mark_adapter if kind == "adapter" else self.mark_model
                asyncio.get_running_loop().call_later(delay, self._retry, kind, key, mark)
            else:
                self._failing.pop((kind, key), None)

    def _retry(self, kind: str, key: Key, mark: Callable[[Key], None]) -> None:
        attempts, _ = self._failing.get((kind, key), (0, 0.0))
        if attempts:
            self._failing[(kind, key)] = (attempts, 0.0)
            mark(key)

    def _lock(self, kind: str, key: Key) -> asyncio.Lock:
        return self._locks.setdefault((f"{kind}/{key[0]}", key[1]), asyncio.Lock())

    async def write_adapter(self, key: Key) -> None:
        record = self.adapters.get(key)
        if record is None:
            return
        async with self._lock("adapter", key):
            pods = list(self.pods_of(record.namespace, record.model))
            step = record.next_promotion(pods, time.time())
            promotion = step.state if step is not None else record.promotion
            status = adapter_status(record.facts(promotion), pods, record.written.get("conditions"), now_iso())
            if step is not None and step.recheck_s is not None:
                self._recheck(key, step.recheck_s)
            if _same(status, record.written):
                if promotion is not None and record.desired is not None:
                    record.promotion = promotion
                    record.target = promotion.stable
                return
            path = custom_path(r.GROUP, r.VERSION, r.ADAPTER_PLURAL, record.namespace, record.name, "status")
            await self.kube.merge_patch(path, {"status": status})
            metrics.STATUS_WRITES.labels("SaigonAdapter").inc()
            previous = record.written
            # Only a written promotion step counts: a failed write is planned again from the old state.
            # A handler may have put a fresher record meanwhile (it copied the promotion before this write).
            fresh = self.adapters.get(key)
            for current in (record,) if fresh is None or fresh is record else (record, fresh):
                current.written = status
                if promotion is not None and current.desired is not None:
                    current.promotion = promotion
                    current.target = promotion.stable
        for kind, reason, message in step.events if step is not None else ():
            if reason in ("Promoted", "RolledBack"):
                metrics.PROMOTIONS.labels(reason).inc()
            await self.events.post(record.ref(), kind, reason, message)
        await self._adapter_events(record, previous, status)

    def _recheck(self, key: Key, delay_s: float) -> None:
        """Looks at an adapter again once a promotion timer (analysis window, deadline) runs out."""
        handle = self._rechecks.pop(key, None)
        if handle is not None:
            handle.cancel()
        loop = asyncio.get_running_loop()
        self._rechecks[key] = loop.call_later(max(0.05, delay_s + 0.05), self.mark_adapter, key)

    async def write_model(self, key: Key) -> None:
        record = self.models.get(key)
        if record is None:
            return
        async with self._lock("model", key):
            facts = ModelFacts(
                generation=record.generation,
                desired_replicas=record.desired_replicas,
                spec_hash=record.spec_hash,
                selector=record.selector,
                invalid=record.invalid,
                apply_error=record.apply_error,
                adapters=len(self._by_model.get(key, ())),
            )
            status = model_status(facts, list(self.pods_of(*key)), record.written.get("conditions"), now_iso())
            if _same(status, record.written):
                return
            path = custom_path(r.GROUP, r.VERSION, r.MODEL_PLURAL, record.namespace, record.name, "status")
            await self.kube.merge_patch(path, {"status": status})
            metrics.STATUS_WRITES.labels("SaigonModel").inc()
            previous, record.written = record.written, status
        before = find_condition(previous.get("conditions"), "Ready")
        after = find_condition(status.get("conditions"), "Ready")
        if after and (
            before is None or before.get("status") != after["status"] or before.get("reason") != after["reason"]
        ):
            kind = (
                "Normal"
                if after["status"] == "True"
                else "Warning"
                if record.invalid or record.apply_error
                else "Normal"
            )
            await self.events.post(record.ref(), kind, after["reason"], after["message"])

    async def _adapter_events(self, record: AdapterRecord, before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
        old_phase, new_phase = before.get("phase"), after.get("phase")
        if old_phase == new_phase:
            return
        ready = find_condition(after.get("conditions"), "Ready") or {}
        if new_phase == "Ready":
            await self.events.post(record.ref(), "Normal", "Served", ready.get("message", ""))
        elif new_phase in ("Degraded", "Failed", "Invalid", "Conflict"):
            degraded = find_condition(after.get("conditions"), "Degraded") or {}
            message = degraded.get("message") if new_phase in ("Degraded", "Failed") else ready.get("message")
            await self.events.post(record.ref(), "Warning", str(ready.get("reason", new_phase)), str(message or ""))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _same(computed: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
    """Compares only the fields this writer owns (other controllers may own other status fields)."""
    mine = {k: stored.get(k) for k in computed}
    return _drop_none(without_timestamps(dict(computed))) == _drop_none(without_timestamps(mine))
