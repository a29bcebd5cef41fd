"""Typed status written by the operator and read by the agents: `status.promotion` of a SaigonAdapter.

Status is ours, but it may have been written by an older operator: reading never fails,
a field that does not validate reads as absent (and an evaluation prompt that does not,
as skipped), so an agent keeps serving the stable version rather than guessing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from saigon_contract.specs import EvalPrompt, Target, target_or_none

Stage = Literal["Waiting", "Canary", "Full"]

# Fields that describe a promotion in flight: written as null (merge patch) when none is.
IN_FLIGHT_FIELDS = (
    "candidate",
    "version",
    "stage",
    "canaryPods",
    "allPods",
    "stageStartedAt",
    "analysisStartedAt",
    "evaluation",
    "collectStats",
)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Status(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class HistoryEntry(_Status):
    version: str
    digest: str | None = None
    outcome: str  # Promoted | RolledBack | Superseded
    time: str
    reason: str


class RolledBack(_Status):
    version: str = Field(min_length=1)
    sha256: str | None = None


_EVAL_PROMPT = TypeAdapter(EvalPrompt)


def _wire(default: Any, key: str) -> Any:
    """A camelCase key on the wire; Python code uses the field's own name."""
    return Field(default=default, validation_alias=key, serialization_alias=key)


class PromotionStatus(_Status):
    """`status.promotion`; `status.target` (the stable version) sits beside it."""

    phase: str = "Stable"
    message: str = ""
    progress: str | None = None
    stable_version: str | None = _wire(None, "stableVersion")
    retain: tuple[str, ...] | None = None
    history: tuple[HistoryEntry, ...] = ()
    rolled_back: RolledBack | None = _wire(None, "rolledBack")
    candidate: Target | None = None
    version: str | None = None
    stage: Stage | None = None
    canary_pods: tuple[str, ...] = _wire((), "canaryPods")
    all_pods: bool = _wire(False, "allPods")
    stage_started_at: str | None = _wire(None, "stageStartedAt")
    analysis_started_at: str | None = _wire(None, "analysisStartedAt")
    evaluation: tuple[EvalPrompt, ...] | None = None
    collect_stats: bool = _wire(False, "collectStats")

    @field_validator("candidate", mode="before")
    @classmethod
    def _checked_target(cls, raw: object) -> object:
        return raw if isinstance(raw, Target) else target_or_none(raw)

    @field_validator("evaluation", mode="before")
    @classmethod
    def _valid_prompts(cls, raw: object) -> object:
        if not isinstance(raw, list | tuple):
            return None
        kept = []
        for item in raw:
            try:
                kept.append(_EVAL_PROMPT.validate_python(item))
            except ValidationError:
                continue
        return tuple(kept)

    @field_validator("canary_pods", "history", mode="before")
    @classmethod
    def _null_is_empty(cls, raw: object) -> object:
        return () if raw is None else raw

    @field_validator("phase", mode="before")
    @classmethod
    def _null_is_stable(cls, raw: object) -> object:
        return raw or "Stable"

    @field_validator("message", mode="before")
    @classmethod
    def _null_is_blank(cls, raw: object) -> object:
        return raw or ""

    def assigned(self, pod: str) -> Target | None:
        """The candidate when `pod` must serve it (every pod in stage Full, the canary pods in Canary), else None."""
        if self.candidate is not None and (
            self.stage == "Full" or (self.stage == "Canary" and pod in self.canary_pods)
        ):
            return self.candidate
        return None

    @classmethod
    def read(cls, raw: object) -> PromotionStatus:
        """From written status; a field that does not validate reads as absent."""
        if not isinstance(raw, dict):
            return cls()
        try:
            return cls.model_validate(raw)
        except ValidationError:
            pass
        fields: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            key = info.validation_alias if isinstance(info.validation_alias, str) else name
            if key not in raw:
                continue
            try:
                cls.model_validate({key: raw[key]})
            except ValidationError:
                continue
            fields[key] = raw[key]
        return cls.model_validate(fields)

    def to_status(self) -> dict[str, Any]:
        """For a merge patch: a field that no longer applies is written as null so that it goes away."""
        out = self.model_dump(mode="json", by_alias=True, exclude={"history"})
        out["history"] = [h.model_dump(mode="json", exclude_none=True) for h in self.history]
        if self.candidate is None:
            out.update(dict.fromkeys(IN_FLIGHT_FIELDS))
        else:
            out["candidate"] = self.candidate.as_dict()
            out["evaluation"] = [p.as_dict() for p in self.evaluation] if self.evaluation else None
        if out["retain"] is not None:
            out["retain"] = list(out["retain"])
        return out
