"""The promotion planner (pure): spec, previous promotion state, pod reports and the clock in; next state out.

`status.target` is the stable version, the one every pod serves unless told otherwise;
a promotion in flight adds a candidate in `status.promotion`, assigned either to the
canary pods (stage Canary) or to every pod (stage Full). Each agent serves what its
pod is assigned (`assigned`), so a rollback is nothing more than dropping the
candidate: every pod goes back to the stable version, which stays on disk until
the promotion ends. The planner is level-based: it looks at what the pods report
now, never at what happened in between, so running it twice changes nothing.

    new spec.version -> [AwaitingApproval] -> Canary (n pods) -> Analyzing (window, gates)
                     -> RollingOut (every pod) -> Stable (history: Promoted)
    a pod fails to load it, an evaluation prompt fails, a metric gate fails, or the
    progress deadline passes -> RolledBack (history: RolledBack; pods back on stable)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from saigon_contract.reports import AdapterReport
from saigon_contract.specs import Promotion, Target, target_or_none
from saigon_contract.status import HistoryEntry, PromotionStatus, RolledBack, Stage

APPROVE_ANNOTATION = "saigon.ai/approve"
MAX_DETAIL = 300
EARLY_MIN_REQUESTS = 20  # a canary failing its error rate on this many requests rolls back before its window ends


@dataclass(frozen=True)
class PromotionState:
    stable: Target | None = None
    candidate: Target | None = None
    stage: Stage | None = None
    canary_pods: tuple[str, ...] = ()
    stage_started_at: float | None = None
    analysis_started_at: float | None = None
    rolled_back: tuple[str, str | None] | None = None  # (version, sha256) of the last rollback
    history: tuple[HistoryEntry, ...] = ()
    phase: str = "Stable"
    message: str = ""

    def assigned(self, pod: str) -> Target | None:
        """The version `pod` must serve."""
        return self.to_model().assigned(pod) or self.stable

    def retain(self) -> list[str]:
        """Versions the agents keep on disk: what pods serve or may return to."""
        return sorted({t.version for t in (self.stable, self.candidate) if t is not None})

    def to_model(self, progress: str | None = None, policy: Promotion | None = None) -> PromotionStatus:
        in_flight = self.candidate is not None
        return PromotionStatus(
            phase=self.phase,
            message=self.message,
            progress=progress,
            stable_version=self.stable.version if self.stable else None,
            retain=tuple(self.retain()),
            history=self.history,
            rolled_back=RolledBack(version=self.rolled_back[0], sha256=self.rolled_back[1])
            if self.rolled_back is not None
            else None,
            candidate=self.candidate,
            version=self.candidate.version if self.candidate else None,
            stage=self.stage if in_flight else None,
            canary_pods=self.canary_pods if self.stage == "Canary" else (),
            all_pods=self.stage == "Full",
            stage_started_at=_iso(self.stage_started_at),
            analysis_started_at=_iso(self.analysis_started_at),
            evaluation=policy.gates.evaluation if policy is not None else None,
            collect_stats=bool(policy is not None and policy.gates.needs_stats and self.stage == "Canary"),
        )

    def to_status(self, progress: str, policy: Promotion | None) -> dict[str, Any]:
        return self.to_model(progress, policy).to_status()

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> PromotionState:
        """Back from a written status (an operator restart); anything unreadable reads as absent."""
        raw = PromotionStatus.read(status.get("promotion"))
        stable = target_or_none(status.get("target"))
        stage = raw.stage if raw.candidate is not None else None
        return cls(
            stable=stable,
            candidate=raw.candidate if stage is not None else None,
            stage=stage,
            canary_pods=raw.canary_pods,
            stage_started_at=_epoch(raw.stage_started_at),
            analysis_started_at=_epoch(raw.analysis_started_at),
            rolled_back=(raw.rolled_back.version, raw.rolled_back.sha256) if raw.rolled_back else None,
            history=raw.history,
            phase=raw.phase,
            message=raw.message,
        )


@dataclass(frozen=True)
class Plan:
    state: PromotionState
    events: tuple[tuple[str, str, str], ...] = ()  # (type, reason, message)
    recheck_s: float | None = None  # look again after this long even if no pod reports anything


@dataclass(frozen=True)
class PodInput:
    """One active pod as the planner needs it."""

    name: str
    report: AdapterReport | None


def same(a: Target | None, b: Target | None) -> bool:
    return a is not None and b is not None and a.fingerprint() == b.fingerprint()


def serves(report: AdapterReport | None, target: Target) -> bool:
    return (
        report is not None
        and report.state == "Loaded"
        and report.version == target.version
        and (target.sha256 is None or report.digest == target.sha256)
    )


def approved(policy: Promotion, version: str, annotations: Mapping[str, str]) -> bool:
    return policy.approved_version == version or annotations.get(APPROVE_ANNOTATION) == version


@dataclass
class _Planner:
    desired: Target
    policy: Promotion
    annotations: Mapping[str, str]
    pods: Sequence[PodInput]
    now: float
    state: PromotionState
    events: list[tuple[str, str, str]] = field(default_factory=list)
    recheck_s: float | None = None

    def emit(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    def record(self, target: Target, outcome: str, reason: str) -> tuple[HistoryEntry, ...]:
        entry = HistoryEntry(
            version=target.version,
            digest=target.sha256,
            outcome=outcome,
            time=_iso(self.now) or "",
            reason=reason[:MAX_DETAIL],
        )
        return (*self.state.history, entry)[-self.policy.history_limit :]

    def run(self) -> Plan:
        st = self.state
        if st.stable is None:
            # The first version has nothing to protect and nothing to roll back to.
            self.state = replace(
                st,
                stable=self.desired,
                candidate=None,
                stage=None,
                history=self.record(self.desired, "Promoted", "first version"),
                phase="Stable",
                message=f"serving version {self.desired.version}",
            )
        elif same(self.desired, st.stable):
            if st.candidate is not None:
                self.state = replace(st, history=self.record(st.candidate, "Superseded", "spec went back"))
                self.emit("Normal", "PromotionCancelled", f"back to version {st.stable.version}")
            self.state = replace(
                self.state, candidate=None, stage=None, phase="Stable", message=f"serving version {st.stable.version}"
            )
        elif st.rolled_back is not None and st.rolled_back == (self.desired.version, self.desired.sha256):
            self.state = replace(st, candidate=None, stage=None, phase="RolledBack")
        else:
            if not same(self.desired, st.candidate):
                self._start()
            self._advance()
        return Plan(self.state, tuple(self.events), self.recheck_s)

    # --- stages ---------------------------------------------------------------------------------

    def _start(self) -> None:
        st = self.state
        history = st.history
        if st.candidate is not None:
            history = self.record(st.candidate, "Superseded", f"version {self.desired.version} was applied")
        self.state = replace(
            st, candidate=self.desired, stage="Waiting", canary_pods=(), history=history, rolled_back=None
        )
        self.emit(
            "Normal",
            "PromotionStarted",
            f"promoting version {self.desired.version} over {st.stable.version if st.stable else '-'}"
            f" ({self.policy.strategy})",
        )
        self._enter_first_stage()

    def _enter_first_stage(self) -> None:
        if self.policy.strategy == "Manual" and not approved(self.policy, self.desired.version, self.annotations):
            self.state = replace(
                self.state,
                stage="Waiting",
                stage_started_at=None,
                phase="AwaitingApproval",
                message=f"waiting for approval of version {self.desired.version} "
                f"(spec.promotion.approvedVersion or annotation {APPROVE_ANNOTATION})",
            )
            self.emit("Normal", "AwaitingApproval", self.state.message)
            return
        canary = self.policy.canary_options
        if canary is not None:
            self.state = replace(self.state, stage="Canary", canary_pods=self._pick(canary.pods(len(self.pods))))
            self.emit(
                "Normal",
                "CanaryStarted",
                f"version {self.desired.version} on {len(self.state.canary_pods)}/{len(self.pods)} pods",
            )
        else:
            self.state = replace(self.state, stage="Full", canary_pods=())
        self.state = replace(self.state, stage_started_at=self.now, analysis_started_at=None)

    def _pick(self, count: int) -> tuple[str, ...]:
        """Keeps the canary pods that still run, and tops up from the others in name order."""
        alive = [p.name for p in self.pods]
        kept = [p for p in self.state.canary_pods if p in alive][:count]
        rest = [p for p in sorted(alive) if p not in kept]
        return tuple(kept + rest[: count - len(kept)])

    def _advance(self) -> None:
        st = self.state
        if st.stage == "Waiting":
            if self.policy.strategy == "Manual" and approved(self.policy, self.desired.version, self.annotations):
                self.emit("Normal", "Approved", f"version {self.desired.version} approved")
                self._enter_first_stage()
            else:
                return
        st = self.state
        canary = self.policy.canary_options
        if st.stage == "Canary" and canary is not None:
            picked = self._pick(canary.pods(len(self.pods)))
            if picked != st.canary_pods:
                self.state = st = replace(st, canary_pods=picked)
        assigned = [p for p in self.pods if st.stage == "Full" or p.name in st.canary_pods]
        candidate = st.candidate
        assert candidate is not None
        failed = [
            p
            for p in assigned
            if p.report is not None and p.report.state == "Failed" and p.report.target == candidate.version
        ]
        if failed:
            first = failed[0].report
            assert first is not None
            self._rollback(first.reason or "LoadFailed", f"{failed[0].name}: {first.error or 'failed'}")
            return
        serving = [p for p in assigned if serves(p.report, candidate)]
        started = st.stage_started_at if st.stage_started_at is not None else self.now
        deadline = started + self.policy.progress_deadline_seconds
        if not assigned or len(serving) < len(assigned):
            if self.now >= deadline:
                self._rollback(
                    "ProgressDeadlineExceeded",
                    f"{len(serving)}/{len(assigned)} pods serve it after {self.policy.progress_deadline_seconds:g}s",
                )
                return
            self._progressing(f"{len(serving)}/{len(assigned)} {self._stage_pods()} serve version {candidate.version}")
            self.recheck_s = deadline - self.now
            return
        verdict, detail = self._evaluation(serving, candidate)
        if verdict == "fail":
            self._rollback("EvaluationFailed", detail)
            return
        if verdict == "wait":
            if self.now >= deadline:
                self._rollback("ProgressDeadlineExceeded", f"evaluation not reported: {detail}")
                return
            self._progressing(f"evaluating version {candidate.version}: {detail}")
            self.recheck_s = deadline - self.now
            return
        if st.stage == "Canary":
            self._analyze(serving, candidate)
        else:
            self._promote()

    def _stage_pods(self) -> str:
        return "canary pods" if self.state.stage == "Canary" else "pods"

    def _progressing(self, message: str) -> None:
        phase = "Canary" if self.state.stage == "Canary" else "RollingOut"
        self.state = replace(self.state, phase=phase, message=message)

    def _evaluation(self, serving: Sequence[PodInput], candidate: Target) -> tuple[str, str]:
        if not self.policy.gates.evaluation:
            return "pass", ""
        waiting = []
        for pod in serving:
            gate = pod.report.gate if pod.report is not None else None
            if gate is None or gate.version != candidate.version or gate.passed is None:
                waiting.append(pod.name)
            elif not gate.passed:
                return "fail", f"{pod.name}: {gate.detail or 'an evaluation prompt failed'}"
        if waiting:
            return "wait", f"waiting for {', '.join(waiting[:3])}"
        return "pass", ""

    def _analyze(self, serving: Sequence[PodInput], candidate: Target) -> None:
        canary = self.policy.canary_options
        assert canary is not None
        st = self.state
        began = st.analysis_started_at
        if began is None:
            began = self.now
            self.state = st = replace(st, analysis_started_at=began)
        left = began + canary.analysis_seconds - self.now
        if left > 0:
            # A clearly failing error rate need not wait for the end of the window.
            failure = self._metric_gates(serving, candidate, early=True)
            if failure is not None:
                self._rollback(*failure)
                return
            self.state = replace(
                st,
                phase="Analyzing",
                message=f"version {candidate.version} on {len(serving)} canary pods; "
                f"analysis ends at {_iso(began + canary.analysis_seconds)}",
            )
            self.recheck_s = left
            return
        failure = self._metric_gates(serving, candidate)
        if failure is not None:
            self._rollback(*failure)
            return
        self.emit("Normal", "CanaryPassed", f"version {candidate.version} passed its gates; rolling out to every pod")
        self.state = replace(st, stage="Full", stage_started_at=self.now, analysis_started_at=None)
        self._advance()

    def _metric_gates(
        self, serving: Sequence[PodInput], candidate: Target, *, early: bool = False
    ) -> tuple[str, str] | None:
        """The first failing metric gate; `early` (mid-window) judges only an error rate on enough requests."""
        gates = self.policy.gates
        if not gates.needs_stats:
            return None
        requests = errors = 0
        p99: float | None = None
        for pod in serving:
            gate = pod.report.gate if pod.report is not None else None
            if gate is None or gate.version != candidate.version:
                continue
            requests += gate.requests or 0
            errors += gate.errors or 0
            if gate.p99_ms is not None:
                p99 = max(p99 or 0.0, gate.p99_ms)
        if early and requests < EARLY_MIN_REQUESTS:
            return None
        if gates.max_error_rate is not None and requests and errors / requests > gates.max_error_rate:
            return "ErrorRate", f"{errors}/{requests} requests failed, over {gates.max_error_rate:g}"
        if early:
            return None
        if gates.max_p99_latency_ms is not None and p99 is not None and p99 > gates.max_p99_latency_ms:
            return "Latency", f"p99 latency {p99:.0f} ms, over {gates.max_p99_latency_ms:g} ms"
        return None

    def _promote(self) -> None:
        st = self.state
        candidate = st.candidate
        assert candidate is not None and st.stable is not None
        self.state = replace(
            st,
            stable=candidate,
            candidate=None,
            stage=None,
            canary_pods=(),
            stage_started_at=None,
            analysis_started_at=None,
            history=self.record(candidate, "Promoted", f"replaced version {st.stable.version}"),
            phase="Stable",
            message=f"serving version {candidate.version}",
        )
        self.emit("Normal", "Promoted", f"version {candidate.version} serves on every pod")

    def _rollback(self, reason: str, detail: str) -> None:
        st = self.state
        candidate = st.candidate
        assert candidate is not None and st.stable is not None
        message = f"version {candidate.version} rolled back to {st.stable.version}: {reason}: {detail}"[:1000]
        self.state = replace(
            st,
            candidate=None,
            stage=None,
            canary_pods=(),
            stage_started_at=None,
            analysis_started_at=None,
            rolled_back=(candidate.version, candidate.sha256),
            history=self.record(candidate, "RolledBack", f"{reason}: {detail}"),
            phase="RolledBack",
            message=message,
        )
        self.emit("Warning", "RolledBack", message)


def plan(
    desired: Target,
    policy: Promotion,
    previous: PromotionState,
    pods: Sequence[PodInput],
    now: float,
    annotations: Mapping[str, str] | None = None,
) -> Plan:
    """The next promotion state for one adapter (`pods`: the model's active pods)."""
    return _Planner(desired, policy, annotations or {}, list(pods), now, previous).run()


def progress(state: PromotionState, pods: Sequence[PodInput]) -> str:
    """Pods serving the newest version (the candidate, else the stable one), out of all pods."""
    newest = state.candidate or state.stable
    if newest is None:
        return f"0/{len(pods)}"
    return f"{sum(1 for p in pods if serves(p.report, newest))}/{len(pods)}"


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _epoch(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None
