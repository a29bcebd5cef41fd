"""What this pod must serve, from the SaigonAdapter objects of its model (pure, no I/O).

The agent acts on `status.target` only: the operator writes it after validating the
spec (and after resolving two objects that claim the same adapter name), so an
invalid or conflicting object never reaches a pod.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from saigon_contract.names import InvalidName, check_adapter_name
from saigon_contract.placement import AdapterPlacement
from saigon_contract.specs import EvalPrompt, Target, target_or_none
from saigon_contract.status import PromotionStatus


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
    # status.placement names this pod (or every pod): otherwise other pods hold it.
    placed_here: bool = True


def desired_from(obj: dict[str, Any], pod: str = "") -> Desired | None:
    """None when the object carries no usable adapter name yet.

    A promotion in flight (status.promotion, saigon_contract.status.PromotionStatus) assigns
    its candidate to the canary pods or to every pod; any other pod serves status.target.
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
    promotion = PromotionStatus.read(status.get("promotion"))
    candidate = promotion.assigned(pod)
    return Desired(
        name=name,
        uid=uid,
        object_name=str(meta.get("name", "")),
        created=str(meta.get("creationTimestamp", "")),
        target=candidate or target,
        deleting=bool(meta.get("deletionTimestamp")),
        retain=frozenset(promotion.retain) if promotion.retain is not None else None,
        candidate=candidate is not None,
        evaluation=tuple(_evaluation(p) for p in promotion.evaluation or ()) if candidate else (),
        collect_stats=candidate is not None and promotion.collect_stats,
        placed_here=AdapterPlacement.read(status.get("placement")).holds(pod),
    )


def _evaluation(prompt: EvalPrompt) -> Evaluation:
    return Evaluation(prompt.prompt, prompt.expect, prompt.max_tokens, prompt.completion, prompt.max_loss)


# elsewhere: served, but by other pods (placement); this pod lets go of it after a while.
Action = Literal["serve", "remove", "keep", "elsewhere"]


@dataclass(frozen=True)
class Decision:
    action: Action
    desired: Desired | None = None


class DesiredBook:
    """All SaigonAdapters of this pod's model, indexed by uid; decides per adapter name."""

    def __init__(self, pod: str = "") -> None:
        self.pod = pod
        self._by_uid: dict[str, Desired] = {}
        self._by_name: dict[str, dict[str, Desired]] = {}  # adapter name -> uid -> object (a name's claims)

    def upsert(self, obj: dict[str, Any]) -> set[str]:
        """Returns the adapter names whose decision may have changed."""
        uid = (obj.get("metadata") or {}).get("uid")
        before = self._by_uid.get(uid) if isinstance(uid, str) else None
        desired = desired_from(obj, self.pod)
        touched = {before.name} if before else set()
        if desired is None:
            if before is not None:
                self._pop(before.uid)
            return touched
        self._put(desired)
        return touched | {desired.name}

    def delete(self, obj: dict[str, Any]) -> set[str]:
        uid = (obj.get("metadata") or {}).get("uid")
        before = self._pop(uid) if isinstance(uid, str) else None
        return {before.name} if before else set()

    def replace_all(self, objs: list[dict[str, Any]]) -> set[str]:
        before = set(self._by_uid.values())
        self._by_uid, self._by_name = {}, {}
        for obj in objs:
            desired = desired_from(obj, self.pod)
            if desired is not None:
                self._put(desired)
        after = set(self._by_uid.values())
        return {d.name for d in before ^ after}

    def _put(self, desired: Desired) -> None:
        self._pop(desired.uid)
        self._by_uid[desired.uid] = desired
        self._by_name.setdefault(desired.name, {})[desired.uid] = desired

    def _pop(self, uid: str) -> Desired | None:
        before = self._by_uid.pop(uid, None)
        if before is not None:
            claims = self._by_name.get(before.name, {})
            claims.pop(uid, None)
            if not claims:
                self._by_name.pop(before.name, None)
        return before

    def collecting(self) -> set[str]:
        """Names whose promotion asks this pod for request figures (few; no scan per name)."""
        return {d.name for d in self._by_uid.values() if d.collect_stats}

    def names(self) -> set[str]:
        return set(self._by_name)

    def decide(self, name: str) -> Decision:
        candidates = list(self._by_name.get(name, {}).values())
        live = [d for d in candidates if not d.deleting]
        serving = sorted((d for d in live if d.target is not None), key=lambda d: (d.created, d.uid))
        if serving:
            return Decision("serve" if serving[0].placed_here else "elsewhere", serving[0])
        if not live:
            # Gone, or every object for this name is being deleted: unload and remove its files.
            return Decision("remove", candidates[0] if candidates else None)
        # Objects exist but none has a validated target yet: leave whatever is there.
        return Decision("keep", live[0])
