"""Pure status computation: per-pod reports in, SaigonAdapter / SaigonModel status out.

Status tells the truth per replica: a pod counts as serving an adapter only when its
agent reports the target version loaded with the target digest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from saigon_contract import resources as r
from saigon_contract.reports import AdapterReport, PodReport
from saigon_contract.specs import Promotion, SpecError, Target

from saigon_operator.promotion import PodInput, PromotionState, progress, serves

MAX_MESSAGE_PODS = 5


@dataclass(frozen=True)
class PodView:
    """What the operator needs to know about one runtime pod."""

    name: str
    phase: str
    ready: bool
    deleting: bool
    spec_hash: str | None
    report: PodReport
    ip: str | None = None

    @property
    def active(self) -> bool:
        """Counts as a replica: running and not on its way out."""
        return self.phase == "Running" and not self.deleting


def pod_view(body: Mapping[str, Any], previous: PodView | None = None) -> PodView:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    annotations = meta.get("annotations") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return PodView(
        name=str(meta.get("name", "")),
        phase=str(status.get("phase") or "Pending"),
        ready=ready,
        deleting=bool(meta.get("deletionTimestamp")),
        spec_hash=annotations.get(r.SPEC_HASH_ANNOTATION),
        report=PodReport.decode(annotations.get(r.REPORT_ANNOTATION), previous.report if previous else None),
        ip=status.get("podIP") or None,
    )


def condition(type_: str, ok: bool, reason: str, message: str, generation: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, "status": "True" if ok else "False", "reason": reason, "message": message}
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def merge_conditions(
    previous: Sequence[dict[str, Any]] | None, new: Iterable[dict[str, Any]], now: str
) -> list[dict[str, Any]]:
    """Keeps lastTransitionTime when a condition's status did not change."""
    before = {c.get("type"): c for c in previous or []}
    merged = []
    for cond in new:
        old = before.get(cond["type"])
        stamp = old.get("lastTransitionTime") if old and old.get("status") == cond["status"] else None
        merged.append({**cond, "lastTransitionTime": stamp or now})
    return merged


def find_condition(conditions: Sequence[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


# --- SaigonAdapter -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterFacts:
    """Everything about one SaigonAdapter that its status depends on, besides the pods."""

    adapter_name: str | None
    generation: int | None
    target: Target | None
    invalid: SpecError | None = None
    conflict_with: str | None = None
    deleting: bool = False
    promotion: PromotionState | None = None
    policy: Promotion | None = None

    def assigned(self, pod: str) -> Target | None:
        return self.promotion.assigned(pod) if self.promotion is not None else self.target


def _pod_entry(pod: PodView, report: AdapterReport | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"pod": pod.name}
    if report is None:
        entry["state"] = "Pending"
        return entry
    entry["state"] = report.state
    for key, value in (
        ("version", report.version),
        ("digest", report.digest),
        ("loadedAt", report.loaded_at),
        ("reason", report.reason),
        ("error", report.error),
    ):
        if value:
            entry[key] = value
    return entry


def adapter_status(
    facts: AdapterFacts, pods: Sequence[PodView], previous_conditions: Sequence[dict[str, Any]] | None, now: str
) -> dict[str, Any]:
    gen = facts.generation
    active = sorted((p for p in pods if p.active), key=lambda p: p.name)
    reports = {p.name: p.report.adapters.get(facts.adapter_name or "") for p in active}
    status: dict[str, Any] = {
        "observedGeneration": gen,
        "replicas": len(active),
        "pods": [_pod_entry(p, reports[p.name]) for p in active],
    }
    if facts.adapter_name:
        status["adapterName"] = facts.adapter_name
    status["target"] = facts.target.as_dict() if facts.target is not None else None

    # Each pod is judged against the version it is assigned (a canary pod: the candidate).
    serving = [p.name for p in active if (want := facts.assigned(p.name)) is not None and serves(reports[p.name], want)]
    failed = [
        (p.name, rep)
        for p in active
        if (rep := reports[p.name]) is not None
        and rep.state == "Failed"
        and (want := facts.assigned(p.name)) is not None
        and rep.target == want.version
    ]
    status["replicasServing"] = len(serving)
    status["serving"] = f"{len(serving)}/{len(active)}"

    if facts.invalid is not None:
        phase, ready = "Invalid", condition("Ready", False, facts.invalid.reason, facts.invalid.message, gen)
    elif facts.conflict_with is not None:
        msg = f"SaigonAdapter {facts.conflict_with} already declares adapter {facts.adapter_name} for this model"
        phase, ready = "Conflict", condition("Ready", False, "Conflict", msg, gen)
    elif facts.deleting:
        phase, ready = "Deleting", condition("Ready", False, "Deleting", "unloading from every replica", gen)
    elif not active:
        phase, ready = "Pending", condition("Ready", False, "NoReplicas", "no running replica of the model", gen)
    elif len(serving) == len(active):
        msg = f"version {facts.target.version if facts.target else '?'} served by {len(serving)}/{len(active)} replicas"
        phase, ready = "Ready", condition("Ready", True, "AllReplicasServing", msg, gen)
    elif failed:
        phase = "Failed" if len(failed) == len(active) else "Degraded"
        ready = condition("Ready", False, failed[0][1].reason or "LoadFailed", _failure_message(failed), gen)
    else:
        msg = f"{len(serving)}/{len(active)} replicas serve version {facts.target.version if facts.target else '?'}"
        phase, ready = "Syncing", condition("Ready", False, "Syncing", msg, gen)

    synced_ok = bool(active) and len(serving) == len(active) and facts.target is not None
    synced = condition(
        "Synced",
        synced_ok,
        "AllReplicasServing" if synced_ok else ("Syncing" if facts.target is not None else "NoTarget"),
        status["serving"] + " replicas serve the target version",
        gen,
    )
    degraded = (
        condition("Degraded", True, failed[0][1].reason or "LoadFailed", _failure_message(failed), gen)
        if failed
        else condition("Degraded", False, "AsExpected", "no replica reports a failure", gen)
    )
    status["phase"] = phase
    status["conditions"] = merge_conditions(previous_conditions, [ready, synced, degraded], now)
    if facts.promotion is not None:
        inputs = [PodInput(p.name, reports[p.name]) for p in active]
        status["promotion"] = facts.promotion.to_status(progress(facts.promotion, inputs), facts.policy)
    return status


def _failure_message(failed: Sequence[tuple[str, AdapterReport]]) -> str:
    parts = [f"{pod}: {rep.error or rep.reason or 'failed'}" for pod, rep in failed[:MAX_MESSAGE_PODS]]
    more = len(failed) - MAX_MESSAGE_PODS
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


# --- SaigonModel ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFacts:
    generation: int | None
    desired_replicas: int
    spec_hash: str | None
    selector: str
    invalid: SpecError | None = None
    apply_error: str | None = None
    adapters: int = 0


def model_status(
    facts: ModelFacts, pods: Sequence[PodView], previous_conditions: Sequence[dict[str, Any]] | None, now: str
) -> dict[str, Any]:
    gen = facts.generation
    live = sorted((p for p in pods if not p.deleting), key=lambda p: p.name)
    active = [p for p in live if p.active]
    ready = [p for p in active if p.ready]
    updated = [p for p in live if facts.spec_hash and p.spec_hash == facts.spec_hash]
    status: dict[str, Any] = {
        "observedGeneration": gen,
        "replicas": len(active),
        "readyReplicas": len(ready),
        "updatedReplicas": len(updated),
        "selector": facts.selector,
        "specHash": facts.spec_hash,
        "adapters": facts.adapters,
        "pods": [
            {
                "name": p.name,
                "phase": p.phase,
                "ready": p.ready,
                "updated": bool(facts.spec_hash) and p.spec_hash == facts.spec_hash,
                "adaptersLoaded": sum(1 for a in p.report.adapters.values() if a.state == "Loaded"),
                "adaptersFailed": sum(1 for a in p.report.adapters.values() if a.state == "Failed"),
            }
            for p in live
        ],
    }
    want = facts.desired_replicas
    if facts.invalid is not None:
        ready_c = condition("Ready", False, facts.invalid.reason, facts.invalid.message, gen)
    elif facts.apply_error is not None:
        ready_c = condition("Ready", False, "ApplyFailed", facts.apply_error, gen)
    elif want == 0:
        ready_c = condition("Ready", True, "ScaledToZero", "no replicas requested", gen)
    elif len(ready) >= want and len(updated) >= want:
        ready_c = condition("Ready", True, "AllReplicasReady", f"{len(ready)}/{want} replicas ready", gen)
    else:
        ready_c = condition("Ready", False, "ReplicasNotReady", f"{len(ready)}/{want} replicas ready", gen)
    available = condition(
        "Available",
        bool(ready),
        "MinimumReplicasAvailable" if ready else "NoReplicaReady",
        f"{len(ready)} replicas ready",
        gen,
    )
    rolling = len(updated) < len(live) or len(live) != want
    progressing = condition(
        "Progressing",
        rolling,
        "Rolling" if rolling else "Complete",
        f"{len(updated)}/{len(live)} pods on the current spec, {want} wanted",
        gen,
    )
    status["conditions"] = merge_conditions(previous_conditions, [ready_c, available, progressing], now)
    return status


def without_timestamps(status: dict[str, Any]) -> dict[str, Any]:
    """For comparing a computed status with the stored one."""
    out = dict(status)
    if "conditions" in out:
        out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in out["conditions"] or []]
    return out
