"""The one writer of SaigonAdapter and SaigonModel status.

Handlers record what they decided (a validated target, an invalid spec, a deletion);
pod events mark the adapters whose per-pod reports changed. A keyed work queue then
recomputes those statuses from the pod index (saigon_operator.indexes) and patches
only what changed, posting Events on user-visible transitions (saigon_operator.transitions). One writer means no
two handlers race on `status.conditions`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from saigon_contract import resources as r
from saigon_contract.kube import ApiError, KubeClient, custom_path
from saigon_contract.placement import AdapterPlacement
from saigon_contract.status import now_iso
from saigon_contract.workqueue import KeyedQueue

from saigon_operator import metrics
from saigon_operator.events import EventRecorder
from saigon_operator.records import AdapterRecord, Key, ModelRecord, compact
from saigon_operator.retry import backoff
from saigon_operator.status import ModelFacts, PodView, adapter_status, model_status, without_timestamps
from saigon_operator.transitions import Transition, adapter_transition, model_transition

log = logging.getLogger(__name__)

PodsOf = Callable[[str, str], Collection[PodView]]  # (namespace, model) -> the model's pods
# (namespace, model), adapter name, the model's pods -> the pods that hold it, and its placement
Placed = Callable[[Key, str | None, Collection[PodView]], tuple[list[PodView], AdapterPlacement]]


def everywhere(_: Key, __: str | None, pods: Collection[PodView]) -> tuple[list[PodView], AdapterPlacement]:
    return list(pods), AdapterPlacement.everywhere()


class Aggregator:
    def __init__(
        self,
        kube: KubeClient,
        events: EventRecorder,
        pods_of: PodsOf,
        *,
        placed: Placed = everywhere,
        debounce_s: float = 0.02,
        model_debounce_s: float = 1.0,
        summary_every_s: float = 30.0,
        progress_every_s: float = 30.0,
        progress_writes_per_s: float = 20.0,
        concurrency: int = 16,
        retry_base_s: float = 1.0,
        retry_cap_s: float = 60.0,
    ) -> None:
        self.kube = kube
        self.events = events
        self.pods_of = pods_of
        self.placed = placed
        self.debounce_s = debounce_s
        self.model_debounce_s = model_debounce_s
        self.summary_every_s = summary_every_s
        self.progress_every_s = progress_every_s
        # Progress-only writes of all adapters together stay near this rate: in a bulk apply,
        # thousands wait at once and the interval grows with them, so the API server spends its
        # time on targets and Ready rather than on per-pod progress that Ready soon replaces.
        self.progress_writes_per_s = progress_writes_per_s
        self._written_at: dict[Key, float] = {}  # monotonic time of each adapter's last status write
        # Adapters whose progress-only change waits (progress_every_s), with when it was first seen.
        self._deferred: dict[Key, float] = {}
        self.adapters: dict[Key, AdapterRecord] = {}
        self.models: dict[Key, ModelRecord] = {}
        self._by_model: dict[Key, set[str]] = {}  # (ns, model) -> adapter object names
        # Model status (replica and adapter counts) changes with every adapter and pod event;
        # once a second is plenty for it, and spares the API server a write per adapter.
        self._adapter_queue: KeyedQueue[Key] = KeyedQueue(
            self._flush_adapter, delay_s=debounce_s, name="adapter-status"
        )
        self._model_queue: KeyedQueue[Key] = KeyedQueue(
            self._flush_model, delay_s=model_debounce_s, name="model-status"
        )
        self._marked_at: dict[Key, float] = {}  # first mark of an adapter not yet written (status lag)
        self._locks: dict[Key, asyncio.Lock] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        # (queue, key) -> (failed attempts in a row, monotonic time before which no write is tried)
        self._failing: dict[tuple[str, Key], tuple[int, float]] = {}

    # --- what handlers tell us -------------------------------------------------------------------

    def put_adapter(self, record: AdapterRecord) -> AdapterRecord:
        key = (record.namespace, record.name)
        old = self.adapters.get(key)
        if old is not None and record.written_json == "{}":
            record.written_json = old.written_json
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
        self._adapter_queue.forget(key)
        self._marked_at.pop(key, None)
        self._written_at.pop(key, None)
        self._deferred.pop(key, None)
        self._failing.pop((self._adapter_queue.name, key), None)
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
        self._model_queue.forget(key)
        self._failing.pop((self._model_queue.name, key), None)
        metrics.OBJECTS.labels("SaigonModel").set(len(self.models))

    def adapters_of(self, namespace: str, model: str) -> list[AdapterRecord]:
        names = self._by_model.get((namespace, model), set())
        return [self.adapters[(namespace, n)] for n in sorted(names) if (namespace, n) in self.adapters]

    # --- pods ------------------------------------------------------------------------------------

    def observe_pod(self, model_key: Key, old: PodView | None, view: PodView | None) -> None:
        """A pod changed from `old` to `view` (None: it is new, or gone): mark what that can affect."""
        namespace, model = model_key
        if old is not None and view is not None and old.active == view.active:
            before, after = old.report.adapters, view.report.adapters
            # Unchanged entries are the same objects (PodReport.decode): `is` first, at C speed.
            changed = {
                n for n in before.keys() | after.keys() if (b := before.get(n)) is not (a := after.get(n)) and b != a
            }
            affected = [a for a in self.adapters_of(namespace, model) if a.adapter_name in changed]
        elif (old is not None and old.active) or (view is not None and view.active):
            affected = self.adapters_of(namespace, model)  # a replica came or went
        else:
            affected = []
        for record in affected:
            self.mark_adapter((record.namespace, record.name))
        if old != view:
            self.mark_model(model_key)

    # --- flushing --------------------------------------------------------------------------------

    def mark_adapter(self, key: Key) -> None:
        self._marked_at.setdefault(key, time.perf_counter())
        self._adapter_queue.mark(key)

    def mark_model(self, key: Key) -> None:
        self._model_queue.mark(key)

    async def run(self) -> None:
        """Writes status as marks arrive, and summarises the Events over budget, until cancelled."""
        try:
            while True:
                await asyncio.sleep(self.summary_every_s)
                await self.events.post_summaries()
        finally:
            await asyncio.gather(self._adapter_queue.close(), self._model_queue.close())

    async def _flush_adapter(self, key: Key) -> None:
        await self._guarded(self.write_adapter, key, self._adapter_queue)
        if key not in self._deferred:
            marked = self._marked_at.pop(key, None)
            if marked is not None:
                metrics.STATUS_LAG.observe(time.perf_counter() - marked)

    async def _flush_model(self, key: Key) -> None:
        await self._guarded(self.write_model, key, self._model_queue)

    async def _guarded(self, write: Callable[[Key], Any], key: Key, queue: KeyedQueue[Key]) -> None:
        """One status write; a transient failure backs off exponentially, a refused one is dropped
        (the next change to the object or its pods writes again)."""
        failing = (queue.name, key)
        attempts, not_before = self._failing.get(failing, (0, 0.0))
        wait = not_before - time.monotonic()
        if wait > 0.01:
            # Marked during a backoff (the mark dropped the retry's timer): keep the retry's time;
            # level-based, it writes the latest state then.
            queue.mark_later(key, wait)
            return
        async with self._slots:
            try:
                await write(key)
            except ApiError as exc:
                metrics.ERRORS.labels("status", exc.reason or str(exc.status)).inc()
                if not exc.transient:
                    self._failing.pop(failing, None)
                    if exc.status != 404:  # 404: the object is gone, nothing to tell
                        log.warning("status write for %s/%s refused, not retried: %s", key[0], key[1], exc)
                    return
                delay = backoff(attempts, self.retry_base_s, self.retry_cap_s)
                self._failing[failing] = (attempts + 1, time.monotonic() + delay)
                log.warning("status write for %s/%s failed, retry in %.0fs: %s", key[0], key[1], delay, exc)
                queue.mark_later(key, delay)
            else:
                self._failing.pop(failing, None)

    def _lock(self, kind: str, key: Key) -> asyncio.Lock:
        return self._locks.setdefault((f"{kind}/{key[0]}", key[1]), asyncio.Lock())

    async def write_adapter(self, key: Key) -> None:
        record = self.adapters.get(key)
        if record is None:
            return
        async with self._lock("adapter", key):
            model = (record.namespace, record.model)
            # Readiness, promotions and status count only the pods that hold this adapter.
            pods, where = self.placed(model, record.adapter_name, list(self.pods_of(*model)))
            step = record.next_promotion(pods, time.time())
            promotion = step.state if step is not None else record.promotion
            written = record.written
            status = adapter_status(record.facts(promotion), pods, written.get("conditions"), now_iso())
            status["placement"] = where.to_status()
            # As JSON has it (lists, not tuples), to compare with the written status, which is kept as JSON.
            status_json = compact(status)
            status = json.loads(status_json)
            if step is not None and step.recheck_s is not None:
                self._recheck(key, step.recheck_s)
            if _same(status, written):
                self._deferred.pop(key, None)
                if promotion is not None and record.desired is not None:
                    record.promotion = promotion
                    record.target = promotion.stable
                return
            planned = step is not None and (bool(step.events) or step.state != record.promotion)
            if not planned and progress_only(written, status):
                # Per-pod progress (one of two placed pods loaded) waits progress_every_s, from the
                # last write and from when it was first seen: the pods' next reports usually make it
                # Ready meanwhile, one write. (From the last write alone, a bulk apply, where agents
                # load long after the target was written, wrote nearly every progress at once.)
                now = time.monotonic()
                since = self._deferred.setdefault(key, now)
                interval = max(self.progress_every_s, len(self._deferred) / self.progress_writes_per_s)
                wait = max(self._written_at.get(key, -1e9), since) + interval - now
                if wait > 0:
                    self._adapter_queue.mark_later(key, wait)
                    return
            self._deferred.pop(key, None)
            path = custom_path(r.GROUP, r.VERSION, r.ADAPTER_PLURAL, record.namespace, record.name, "status")
            await self.kube.merge_patch(path, {"status": status})
            self._written_at[key] = time.monotonic()
            metrics.STATUS_WRITES.labels("SaigonAdapter").inc()
            previous = written
            # Only a written promotion step counts: a failed write is planned again from the old state.
            # A handler may have put a fresher record meanwhile (it copied the promotion before this write).
            fresh = self.adapters.get(key)
            for current in (record,) if fresh is None or fresh is record else (record, fresh):
                current.written_json = status_json
                if promotion is not None and current.desired is not None:
                    current.promotion = promotion
                    current.target = promotion.stable
        for kind, reason, message in step.events if step is not None else ():
            if reason in ("Promoted", "RolledBack"):
                metrics.PROMOTIONS.labels(reason).inc()
            await self._post_for_adapter(record, (kind, reason, message))
        await self._post_for_adapter(record, adapter_transition(previous, status))

    async def _post_for_adapter(self, record: AdapterRecord, event: Transition | None) -> None:
        """Adapter events spend their model's event budget (saigon_operator.events)."""
        if event is None:
            return
        model = self.models.get((record.namespace, record.model))
        if model is None:
            await self.events.post(record.ref(), *event)
        else:
            await self.events.post_within_budget(record.ref(), model.ref(), *event)

    def _recheck(self, key: Key, delay_s: float) -> None:
        """Looks at an adapter again once a promotion timer (analysis window, deadline) runs out."""
        self._adapter_queue.mark_later(key, max(0.05, delay_s + 0.05))

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
        failing = bool(record.invalid or record.apply_error)
        await self._post(record.ref(), model_transition(previous, status, failing=failing))

    async def _post(self, ref: dict[str, str], event: Transition | None) -> None:
        if event is not None:
            await self.events.post(ref, *event)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def progress_only(written: Mapping[str, Any], computed: Mapping[str, Any]) -> bool:
    """Nothing a user or an agent acts on changed: the same phase, target, placement and
    promotion stage, and every condition with the same status and reason (only counts, messages,
    progress and per-pod entries moved)."""

    def gist(status: Mapping[str, Any]) -> tuple[Any, ...]:
        conditions = sorted((c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or [])
        return (
            status.get("phase"),
            status.get("observedGeneration"),
            _drop_none(status.get("target")),
            status.get("placement"),
            {k: v for k, v in _drop_none(status.get("promotion") or {}).items() if k not in ("progress", "message")},
            conditions,
        )

    return bool(written) and gist(written) == gist(computed)


def _same(computed: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
    """Compares only the fields this writer owns (other controllers may own other status fields)."""
    mine = {k: stored.get(k) for k in computed}
    return _drop_none(without_timestamps(dict(computed))) == _drop_none(without_timestamps(mine))
