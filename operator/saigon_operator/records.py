"""What the status writer (saigon_operator.aggregator) knows about each SaigonAdapter and SaigonModel:
what the handlers decided, and the status last written."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from saigon_contract import resources as r
from saigon_contract.specs import AdapterSources, Promotion, SpecError, Target

from saigon_operator.promotion import Plan, PodInput, PromotionState, plan
from saigon_operator.status import AdapterFacts, PodView

Key = tuple[str, str]  # (namespace, name)


def compact(status: Mapping[str, Any]) -> str:
    return json.dumps(status, separators=(",", ":"))


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
    # The status last written, as compact JSON: as dicts, 10,000 adapters' statuses took 60 MB
    # of the operator's memory; they are read only when the adapter's status is computed again.
    written_json: str = "{}"
    # The spec's version and promotion policy (None while invalid or in conflict): the planner
    # moves `promotion` towards `desired`; `target` is always the promotion's stable version.
    desired: Target | None = None
    policy: Promotion | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    promotion: PromotionState | None = None

    @property
    def written(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.written_json)
        return value

    @written.setter
    def written(self, status: Mapping[str, Any]) -> None:
        self.written_json = compact(status)

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
    # The model's spec.adapterSources: which credential Secrets and endpoints its adapters may use.
    source_policy: AdapterSources | None = None
    # spec.auth.users when it issues inference tokens (None: auth Disabled, or the spec is invalid or unseen).
    token_users: frozenset[str] | None = None

    def ref(self) -> dict[str, str]:
        return {
            "apiVersion": r.API_VERSION,
            "kind": r.MODEL_KIND,
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
        }
