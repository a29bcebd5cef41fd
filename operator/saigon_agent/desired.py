"""What this pod must serve, from the SaigonAdapter objects of its model (pure, no I/O).

The agent acts on `status.target` only: the operator writes it after validating the
spec (and after resolving two objects that claim the same adapter name), so an
invalid or conflicting object never reaches a pod.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from saigon_operator.names import InvalidName, check_adapter_name
from saigon_operator.specs import Target, target_or_none


@dataclass(frozen=True)
class Evaluation:
    """A prompt to run against a candidate version: a substring its greedy answer must contain,
    and/or a completion whose mean loss (nats per token) must stay at or below `max_loss`."""

    prompt: str
    expect: str | None
    max_tokens: int
    completion: str | None = None
    max_loss: float | None = None


@dataclass(frozen=True)
class Desired:
    name: str  # the adapter name (user_<id>, ...)
    uid: str
    object_name: str  # the SaigonAdapter's name, for logs (adapter names may hold user ids)
    created: str
    target: Target | None  # what this pod must serve: the stable version, or a candidate assigned to it
    deleting: bool
    # Versions to keep on disk (None: the operator does not say; keep the target and the previous one).
    retain: frozenset[str] | None = None
    candidate: bool = False  # `target` is a promotion candidate, not yet the stable version
    evaluation: tuple[Evaluation, ...] = ()
    collect_stats: bool = False


def desired_from(obj: dict[str, Any], pod: str = "") -> Desired | None:
    """None when the object carries no usable adapter name yet.

    A promotion in flight (status.promotion, see saigon_operator.promotion) assigns its
    candidate to the canary pods or to every pod; any other pod serves status.target.
    """
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    name = status.get("adapterName")
    uid = meta.get("uid")
    if not isinstance(name, str) or not isinstance(uid, str):
        return None
    try:
        check_adapter_name(name)
    except InvalidName:
        return None
    target = target_or_none(status.get("target"))
    promotion = status.get("promotion") if isinstance(status.get("promotion"), dict) else {}
    assert isinstance(promotion, dict)
    candidate = target_or_none(promotion.get("candidate"))
    canary_pods = promotion.get("canaryPods") if isinstance(promotion.get("canaryPods"), list) else []
    assigned = candidate is not None and (promotion.get("allPods") is True or pod in (canary_pods or []))
    retain = promotion.get("retain")
    return Desired(
        name=name,
        uid=uid,
        object_name=str(meta.get("name", "")),
        created=str(meta.get("creationTimestamp", "")),
        target=candidate if assigned else target,
        deleting=bool(meta.get("deletionTimestamp")),
        retain=frozenset(v for v in retain if isinstance(v, str)) if isinstance(retain, list) else None,
        candidate=assigned,
        evaluation=_evaluation(promotion.get("evaluation")) if assigned else (),
        collect_stats=assigned and promotion.get("collectStats") is True,
    )


def number(value: object) -> float | None:
    """A JSON number as a float (never a bool), else None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _evaluation(raw: object) -> tuple[Evaluation, ...]:
    out = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            continue
        expect, completion, max_loss = item.get("expect"), item.get("completion"), number(item.get("maxLoss"))
        scored = isinstance(completion, str) and max_loss is not None
        if not isinstance(expect, str) and not scored:
            continue
        tokens = item.get("maxTokens")
        out.append(
            Evaluation(
                item["prompt"],
                expect if isinstance(expect, str) else None,
                tokens if isinstance(tokens, int) else 16,
                completion if scored else None,
                max_loss if scored else None,
            )
        )
    return tuple(out)


Action = Literal["serve", "remove", "keep"]


@dataclass(frozen=True)
class Decision:
    action: Action
    desired: Desired | None = None


class DesiredBook:
    """All SaigonAdapters of this pod's model, indexed by uid; decides per adapter name."""

    def __init__(self, pod: str = "") -> None:
        self.pod = pod
        self._by_uid: dict[str, Desired] = {}

    def upsert(self, obj: dict[str, Any]) -> set[str]:
        """Returns the adapter names whose decision may have changed."""
        uid = (obj.get("metadata") or {}).get("uid")
        before = self._by_uid.get(uid) if isinstance(uid, str) else None
        desired = desired_from(obj, self.pod)
        touched = {before.name} if before else set()
        if desired is None:
            if before is not None:
                del self._by_uid[before.uid]
            return touched
        self._by_uid[desired.uid] = desired
        return touched | {desired.name}

    def delete(self, obj: dict[str, Any]) -> set[str]:
        uid = (obj.get("metadata") or {}).get("uid")
        before = self._by_uid.pop(uid, None) if isinstance(uid, str) else None
        return {before.name} if before else set()

    def replace_all(self, objs: list[dict[str, Any]]) -> set[str]:
        before = set(self._by_uid.values())
        self._by_uid = {}
        for obj in objs:
            desired = desired_from(obj, self.pod)
            if desired is not None:
                self._by_uid[desired.uid] = desired
        after = set(self._by_uid.values())
        return {d.name for d in before ^ after}

    def collecting(self) -> set[str]:
        """Names whose promotion asks this pod for request figures (few; no scan per name)."""
        return {d.name for d in self._by_uid.values() if d.collect_stats}

    def names(self) -> set[str]:
        return {d.name for d in self._by_uid.values()}

    def decide(self, name: str) -> Decision:
        candidates = [d for d in self._by_uid.values() if d.name == name]
        live = [d for d in candidates if not d.deleting]
        serving = sorted((d for d in live if d.target is not None), key=lambda d: (d.created, d.uid))
        if serving:
            return Decision("serve", serving[0])
        if not live:
            # Gone, or every object for this name is being deleted: unload and remove its files.
            return Decision("remove", candidates[0] if candidates else None)
        # Objects exist but none has a validated target yet: leave whatever is there.
        return Decision("keep", live[0])
