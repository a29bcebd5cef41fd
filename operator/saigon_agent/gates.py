"""Promotion gate inputs this pod reports for a candidate version: the verdict of its evaluation
prompts and the request figures the runtime measured for it (the operator's planner judges them)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from saigon_contract.reports import GateReport

from saigon_agent.desired import Desired, Evaluation
from saigon_agent.errors import RuntimeRejected, RuntimeUnavailable
from saigon_agent.runtime_client import EvalAnswer, RuntimeAdmin

log = logging.getLogger(__name__)


class PromotionGates:
    def __init__(self, runtime: RuntimeAdmin) -> None:
        self.runtime = runtime
        self._reports: dict[str, GateReport] = {}  # per adapter name

    def report(self, name: str, version: str) -> GateReport | None:
        """What to publish for `version` of `name` (None once it is no longer the candidate here)."""
        gate = self._reports.get(name)
        return gate if gate is not None and gate.version == version else None

    def drop(self, name: str) -> None:
        self._reports.pop(name, None)

    def _base(self, name: str, version: str) -> GateReport:
        return self.report(name, version) or GateReport(version)

    def needs_evaluation(self, name: str, desired: Desired) -> bool:
        """A candidate with evaluation prompts and no verdict yet (drops the inputs of a non-candidate)."""
        if not desired.candidate or desired.target is None:
            self.drop(name)
            return False
        gate = self.report(name, desired.target.version)
        return bool(desired.evaluation) and (gate is None or gate.passed is None)

    async def evaluate(self, name: str, version: str, checks: Sequence[Evaluation], label: str) -> GateReport:
        """Runs the evaluation prompts against `version` and records the verdict (None: could not run)."""
        try:
            answers = await self.runtime.evaluate(name, version, list(checks))
        except (RuntimeRejected, RuntimeUnavailable) as exc:
            # No verdict: the operator waits (and rolls back at its progress deadline).
            log.warning("%s: evaluation of version %s could not run: %s", label, version, exc.message)
            passed, detail = None, None
        else:
            passed, detail = judge(checks, answers)
        gate = replace(self._base(name, version), passed=passed, detail=detail)
        self._reports[name] = gate
        return gate

    async def collect_stats(self, name: str, version: str) -> bool:
        """Reads the runtime's request figures for `version`; True when they were recorded."""
        try:
            figures = await self.runtime.version_stats(name)
        except (RuntimeRejected, RuntimeUnavailable):
            return False
        now = figures.get(version)
        if now is None:
            return False
        self._reports[name] = replace(
            self._base(name, version), requests=now.requests, errors=now.errors, p99_ms=now.p99_ms
        )
        return True


def judge(checks: Sequence[Evaluation], answers: Sequence[EvalAnswer]) -> tuple[bool, str]:
    """The verdict on a candidate's evaluation: every answer holds its text and keeps its loss low."""
    count = len(checks)
    for i, (check, answer) in enumerate(zip(checks, answers, strict=True), start=1):
        if check.expect is not None and check.expect not in answer.output:
            return False, f"evaluation prompt {i} of {count}: the answer lacks the expected text"
        if check.max_loss is not None and (answer.loss is None or answer.loss > check.max_loss):
            shown = "not reported" if answer.loss is None else f"{answer.loss:.3f}"
            return False, f"evaluation prompt {i} of {count}: completion loss {shown} > maxLoss {check.max_loss:g}"
    return True, f"{count} evaluation prompts passed"
