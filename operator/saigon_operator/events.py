"""Kubernetes Events for user-visible transitions (posted by the operator itself, best effort).

Adapter events of one model share a budget (`EventBudget`): a burst, then a steady rate, per
event type and reason. One adapter applied by hand gets its Events as always; a bulk apply of thousands
would post an Event per adapter (a third of the operator's API requests, and a flood in
`kubectl get events`), so past the budget they are counted instead and told in one summary
Event on the SaigonModel per interval. Each adapter's status conditions still say it all.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from saigon_contract.kube import ApiError, KubeClient, object_path
from saigon_contract.status import now_iso

from saigon_operator import metrics

log = logging.getLogger(__name__)

Ref = dict[str, str]  # apiVersion, kind, name, namespace, uid


@dataclass
class _Bucket:
    tokens: float
    filled_at: float
    held: int = 0  # events not posted one by one since the last drain


class EventBudget:
    """A token bucket per (group, event type, reason): `burst` events at once, then `per_second`.
    Per reason, so that one adapter's promotion steps are never held back by a flood of another
    kind (10,000 adapters each served for the first time)."""

    def __init__(self, burst: int = 20, per_second: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.per_second = per_second
        self.clock = clock
        self._buckets: dict[tuple[Any, str, str], _Bucket] = {}

    def take(self, group: Any, type_: str, reason: str) -> bool:
        """True: post this event; False: it was counted for the group's next summary."""
        now = self.clock()
        bucket = self._buckets.setdefault((group, type_, reason), _Bucket(float(self.burst), now))
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.filled_at) * self.per_second)
        bucket.filled_at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        bucket.held += 1
        return False

    def drain(self) -> dict[Any, dict[str, Counter[str]]]:
        """What was held since the last drain: group -> event type -> reason -> count."""
        held: dict[Any, dict[str, Counter[str]]] = {}
        for key, bucket in list(self._buckets.items()):
            group, type_, reason = key
            if bucket.held:
                held.setdefault(group, {}).setdefault(type_, Counter())[reason] = bucket.held
                bucket.held = 0
            elif bucket.tokens >= self.burst:
                del self._buckets[key]  # full and idle: forget it
        return held


class EventRecorder:
    def __init__(self, kube: KubeClient, component: str = "saigon-operator", budget: EventBudget | None = None) -> None:
        self.kube = kube
        self.component = component
        self.budget = budget or EventBudget()
        self._groups: dict[tuple[str, str, str], Ref] = {}

    async def post_within_budget(self, ref: Ref, group: Ref, type_: str, reason: str, message: str) -> None:
        """Posts on `ref` unless `group` (the model, which gets the summary) spent its budget."""
        if self.budget.take(_key(group), type_, reason):
            await self.post(ref, type_, reason, message)
        else:
            self._groups[_key(group)] = group
            metrics.EVENTS_SUMMARIZED.labels(type_).inc()

    async def post_summaries(self) -> None:
        """One Event per group and type for what its budget held back since the last call."""
        for key, by_type in self.budget.drain().items():
            group = self._groups.pop(key, None)
            if group is None:
                continue
            for type_, reasons in by_type.items():
                total = sum(reasons.values())
                counts = ", ".join(f"{reason} x{n:,}" for reason, n in reasons.most_common())
                message = (
                    f"{total:,} adapter events were not posted one by one (over the budget of "
                    f"{self.budget.burst} at once, then {self.budget.per_second:g}/s): {counts}. "
                    "Each adapter's status conditions carry its state."
                )
                await self.post(group, type_, "AdapterEventsSummarized", message)

    async def post(self, ref: Ref, type_: str, reason: str, message: str) -> None:
        """`ref`: apiVersion, kind, name, namespace, uid of the object the event is about."""
        namespace = ref["namespace"]
        now = now_iso()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{ref['name']}.{secrets.token_hex(8)}", "namespace": namespace},
            "involvedObject": {k: ref[k] for k in ("apiVersion", "kind", "name", "namespace", "uid") if ref.get(k)},
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.kube.create(object_path("Event", namespace), body)
        except ApiError as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, namespace, ref["name"], exc)


def _key(ref: Ref) -> tuple[str, str, str]:
    return ref["namespace"], ref["kind"], ref["name"]
