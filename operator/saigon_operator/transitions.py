"""The Events a status change posts (pure): a user-visible transition in, (type, reason, message) out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from saigon_operator.status import find_condition

Transition = tuple[str, str, str]  # (Normal | Warning, reason, message)


def adapter_transition(before: Mapping[str, Any], after: Mapping[str, Any]) -> Transition | None:
    """A SaigonAdapter whose phase changed: Served when Ready, a Warning when it degrades or fails."""
    old_phase, new_phase = before.get("phase"), after.get("phase")
    if old_phase == new_phase:
        return None
    ready = find_condition(after.get("conditions"), "Ready") or {}
    if new_phase == "Ready":
        return "Normal", "Served", ready.get("message", "")
    if new_phase in ("Degraded", "Failed", "Invalid", "Conflict"):
        degraded = find_condition(after.get("conditions"), "Degraded") or {}
        message = degraded.get("message") if new_phase in ("Degraded", "Failed") else ready.get("message")
        return "Warning", str(ready.get("reason", new_phase)), str(message or "")
    return None


def model_transition(before: Mapping[str, Any], after: Mapping[str, Any], *, failing: bool) -> Transition | None:
    """A SaigonModel whose Ready condition changed status or reason (`failing`: an invalid spec or
    a failed apply, which makes a not-Ready model a Warning)."""
    was = find_condition(before.get("conditions"), "Ready")
    now = find_condition(after.get("conditions"), "Ready")
    if not now or (was is not None and was.get("status") == now["status"] and was.get("reason") == now["reason"]):
        return None
    kind = "Normal" if now["status"] == "True" or not failing else "Warning"
    return kind, now["reason"], now["message"]
