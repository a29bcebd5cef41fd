"""The promotion planner: spec, previous state, pod reports and the clock in; the next state out."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from saigon_contract.reports import AdapterReport, GateReport
from saigon_contract.specs import Promotion, Target, parse_target
from saigon_operator.handlers.model import agent_secrets
from saigon_operator.promotion import PodInput, PromotionState, plan, progress
from saigon_operator.records import AdapterRecord

V1, V2 = "1" * 64, "2" * 64
PODS = ("pod-a", "pod-b", "pod-c", "pod-d")


def target(version: str, sha: str) -> Target:
    return parse_target(
        {"version": version, "sha256": sha, "source": {"https": {"url": f"https://x.example/{version}"}}}
    )


STABLE, NEW = target("v1", V1), target("v2", V2)


def policy(**raw: Any) -> Promotion:
    return Promotion.model_validate(raw)


def loaded(t: Target, gate: GateReport | None = None) -> AdapterReport:
    return AdapterReport(state="Loaded", target=t.version, version=t.version, digest=t.sha256, gate=gate)


def pods(**reports: AdapterReport | None) -> list[PodInput]:
    """Every pod in PODS, serving v1 unless told otherwise."""
    return [PodInput(name, reports.get(name.replace("-", "_"), loaded(STABLE))) for name in PODS]


def step(pol: Promotion, state: PromotionState, inputs: list[PodInput], now: float, **kw: Any) -> Any:
    return plan(NEW, pol, state, inputs, now, **kw)


START = PromotionState(stable=STABLE)


def test_first_version_is_served_at_once() -> None:
    result = plan(STABLE, policy(strategy="Canary"), PromotionState(), pods(), 0.0)
    assert result.state.stable == STABLE and result.state.candidate is None
    assert result.state.phase == "Stable" and result.state.history[-1].outcome == "Promoted"
    assert all(result.state.assigned(p) == STABLE for p in PODS)


def test_immediate_assigns_every_pod_then_promotes() -> None:
    pol = policy()
    first = step(pol, START, pods(), 0.0)
    assert first.state.stage == "Full" and first.state.phase == "RollingOut"
    assert all(first.state.assigned(p) == NEW for p in PODS)
    assert [e[1] for e in first.events] == ["PromotionStarted"]
    assert first.state.retain() == ["v1", "v2"]  # the old version stays for a rollback
    half = step(pol, first.state, pods(pod_a=loaded(NEW), pod_b=loaded(NEW)), 1.0)
    assert half.state.stable == STABLE and progress(half.state, pods(pod_a=loaded(NEW))) == "1/4"
    done = step(pol, half.state, pods(**{n.replace("-", "_"): loaded(NEW) for n in PODS}), 2.0)
    assert done.state.stable == NEW and done.state.candidate is None and done.state.phase == "Stable"
    assert done.state.history[-1].outcome == "Promoted" and done.state.history[-1].digest == V2
    assert done.state.retain() == ["v2"]
    assert [e[1] for e in done.events] == ["Promoted"]
    # Level-based: planning again changes nothing.
    again = step(pol, done.state, pods(**{n.replace("-", "_"): loaded(NEW) for n in PODS}), 3.0)
    assert again.state == done.state and not again.events


@pytest.mark.parametrize(("replicas", "count"), [(1, 1), (2, 2), ("25%", 1), ("50%", 2), ("60%", 3), ("100%", 4)])
def test_canary_count_and_percentage(replicas: int | str, count: int) -> None:
    result = step(policy(strategy="Canary", canary={"replicas": replicas}), START, pods(), 0.0)
    assert result.state.stage == "Canary" and len(result.state.canary_pods) == count
    assert result.state.canary_pods == PODS[:count]
    assert sum(result.state.assigned(p) == NEW for p in PODS) == count


def test_canary_holds_for_the_analysis_window_then_rolls_out() -> None:
    pol = policy(strategy="Canary", canary={"replicas": 1, "analysisSeconds": 30})
    started = step(pol, START, pods(), 100.0)
    assert started.state.canary_pods == ("pod-a",) and started.state.phase == "Canary"
    serving = step(pol, started.state, pods(pod_a=loaded(NEW)), 101.0)
    assert serving.state.phase == "Analyzing" and serving.recheck_s == pytest.approx(30.0)
    mid = step(pol, serving.state, pods(pod_a=loaded(NEW)), 120.0)
    assert mid.state.phase == "Analyzing" and mid.state.stage == "Canary" and mid.recheck_s == pytest.approx(11.0)
    passed = step(pol, mid.state, pods(pod_a=loaded(NEW)), 131.5)
    assert passed.state.stage == "Full" and passed.state.phase == "RollingOut"
    assert [e[1] for e in passed.events] == ["CanaryPassed"]
    assert all(passed.state.assigned(p) == NEW for p in PODS)


def test_a_canary_pod_that_goes_away_is_replaced() -> None:
    pol = policy(strategy="Canary", canary={"replicas": 2})
    started = step(pol, START, pods(), 0.0)
    assert started.state.canary_pods == ("pod-a", "pod-b")
    without_a = [p for p in pods() if p.name != "pod-a"]
    again = step(pol, started.state, without_a, 1.0)
    assert again.state.canary_pods == ("pod-b", "pod-c")


def test_metric_gates_fail_and_roll_back() -> None:
    pol = policy(strategy="Canary", canary={"analysisSeconds": 10}, gates={"maxErrorRate": 0.05})
    started = step(pol, START, pods(), 0.0)
    bad = loaded(NEW, GateReport("v2", requests=10, errors=1, p99_ms=20.0))  # too few to fail early
    analyzing = step(pol, started.state, pods(pod_a=bad), 1.0)
    assert analyzing.state.phase == "Analyzing"
    judged = step(pol, analyzing.state, pods(pod_a=bad), 11.0)
    st = judged.state
    assert st.phase == "RolledBack" and st.candidate is None and st.stable == STABLE
    assert all(st.assigned(p) == STABLE for p in PODS)
    assert st.history[-1].outcome == "RolledBack" and "ErrorRate" in st.history[-1].reason
    assert judged.events[0][:2] == ("Warning", "RolledBack")
    # Status is merge-patched: what no longer applies is written as null, so that agents stop seeing it.
    written = st.to_status("0/4", pol)
    assert written["candidate"] is None and written["canaryPods"] is None and written["allPods"] is None
    assert written["rolledBack"] == {"version": "v2", "sha256": V2}
    # The rolled back version is not tried again while the spec still asks for it.
    later = step(pol, st, pods(), 50.0)
    assert later.state.candidate is None and later.state.phase == "RolledBack" and not later.events


def test_a_clearly_failing_error_rate_rolls_back_before_the_window_ends() -> None:
    pol = policy(strategy="Canary", canary={"analysisSeconds": 600}, gates={"maxErrorRate": 0.05, "maxP99LatencyMs": 1})
    started = step(pol, START, pods(), 0.0)
    few = loaded(NEW, GateReport("v2", requests=5, errors=5, p99_ms=900.0))
    assert step(pol, started.state, pods(pod_a=few), 1.0).state.phase == "Analyzing"  # too few to judge early
    many = loaded(NEW, GateReport("v2", requests=40, errors=10, p99_ms=900.0))
    result = step(pol, started.state, pods(pod_a=many), 2.0)
    assert result.state.phase == "RolledBack" and "ErrorRate" in result.state.message


def test_latency_gate() -> None:
    pol = policy(strategy="Canary", canary={"analysisSeconds": 0}, gates={"maxP99LatencyMs": 100})
    started = step(pol, START, pods(), 0.0)
    slow = loaded(NEW, GateReport("v2", requests=10, errors=0, p99_ms=250.0))
    assert step(pol, started.state, pods(pod_a=slow), 1.0).state.phase == "RolledBack"
    fast = loaded(NEW, GateReport("v2", requests=10, errors=0, p99_ms=50.0))
    assert step(pol, started.state, pods(pod_a=fast), 1.0).state.stage == "Full"


def test_evaluation_prompts_gate_the_canary() -> None:
    pol = policy(
        strategy="Canary", canary={"analysisSeconds": 0}, gates={"evaluation": [{"prompt": "a", "expect": "b"}]}
    )
    started = step(pol, START, pods(), 0.0)
    waiting = step(pol, started.state, pods(pod_a=loaded(NEW)), 1.0)
    assert waiting.state.stage == "Canary" and "evaluating" in waiting.state.message
    failed = step(pol, started.state, pods(pod_a=loaded(NEW, GateReport("v2", passed=False, detail="prompt 1"))), 2.0)
    assert failed.state.phase == "RolledBack" and "EvaluationFailed" in failed.state.history[-1].reason
    ok = step(pol, started.state, pods(pod_a=loaded(NEW, GateReport("v2", passed=True))), 2.0)
    assert ok.state.stage == "Full"
    # Stale verdicts about another version do not count.
    stale = step(pol, started.state, pods(pod_a=loaded(NEW, GateReport("v1", passed=True))), 2.0)
    assert stale.state.stage == "Canary"


def test_a_pod_that_fails_to_load_rolls_back() -> None:
    failed = AdapterReport(state="Failed", target="v2", version="v1", digest=V1, reason="InvalidArtifact", error="bad")
    started = step(policy(), START, pods(), 0.0)
    result = step(policy(), started.state, pods(pod_c=failed), 1.0)
    assert result.state.phase == "RolledBack" and "InvalidArtifact: pod-c: bad" in result.state.message
    assert result.state.retain() == ["v1"]


def test_progress_deadline_rolls_back() -> None:
    pol = policy(progressDeadlineSeconds=60)
    started = step(pol, START, pods(), 0.0)
    slow = step(pol, started.state, pods(pod_a=loaded(NEW)), 30.0)
    assert slow.state.phase == "RollingOut" and slow.recheck_s == pytest.approx(30.0)
    late = step(pol, slow.state, pods(pod_a=loaded(NEW)), 61.0)
    assert late.state.phase == "RolledBack" and "ProgressDeadlineExceeded" in late.state.message


def test_manual_waits_then_proceeds_on_the_field_or_the_annotation() -> None:
    waiting = step(policy(strategy="Manual"), START, pods(), 0.0)
    assert waiting.state.phase == "AwaitingApproval" and waiting.state.stage == "Waiting"
    assert all(waiting.state.assigned(p) == STABLE for p in PODS)
    assert [e[1] for e in waiting.events] == ["PromotionStarted", "AwaitingApproval"]
    still = step(policy(strategy="Manual", approvedVersion="v1"), waiting.state, pods(), 500.0)
    assert still.state.phase == "AwaitingApproval"  # approval names a version: an old one does not count
    go = step(policy(strategy="Manual", approvedVersion="v2"), waiting.state, pods(), 501.0)
    assert go.state.stage == "Full" and [e[1] for e in go.events] == ["Approved"]
    by_annotation = step(
        policy(strategy="Manual"), waiting.state, pods(), 501.0, annotations={"saigon.ai/approve": "v2"}
    )
    assert by_annotation.state.stage == "Full"
    with_canary = step(
        policy(strategy="Manual", canary={"replicas": 1}, approvedVersion="v2"), waiting.state, pods(), 1
    )
    assert with_canary.state.stage == "Canary" and with_canary.state.canary_pods == ("pod-a",)


def test_a_newer_version_supersedes_the_candidate_and_going_back_cancels() -> None:
    started = step(policy(strategy="Canary"), START, pods(), 0.0)
    v3 = target("v3", "3" * 64)
    newer = plan(v3, policy(strategy="Canary"), started.state, pods(), 1.0)
    assert newer.state.candidate == v3
    assert [(h.version, h.outcome) for h in newer.state.history] == [("v2", "Superseded")]
    back = plan(STABLE, policy(strategy="Canary"), newer.state, pods(), 2.0)
    assert back.state.candidate is None and back.state.phase == "Stable"
    assert back.state.history[-1].outcome == "Superseded"


def test_history_keeps_the_last_n() -> None:
    pol = policy(historyLimit=3)
    state = START
    for i in range(2, 8):
        t = target(f"v{i}", f"{i}" * 64)
        state = plan(t, pol, state, pods(), float(i)).state
        everyone = [PodInput(p, loaded(t)) for p in PODS]
        state = plan(t, pol, state, everyone, float(i) + 0.5).state
        assert state.stable == t
    assert [h.version for h in state.history] == ["v5", "v6", "v7"]


def test_state_survives_a_round_trip_through_status() -> None:
    pol = policy(strategy="Canary", canary={"replicas": 2, "analysisSeconds": 30}, gates={"maxErrorRate": 0.1})
    started = step(pol, START, pods(), 1_700_000_000.25)
    analyzing = step(pol, started.state, pods(pod_a=loaded(NEW), pod_b=loaded(NEW)), 1_700_000_001.5).state
    status: dict[str, Any] = {"target": STABLE.as_dict(), "promotion": analyzing.to_status("2/4", pol)}
    assert status["promotion"]["collectStats"] is True and status["promotion"]["canaryPods"] == ["pod-a", "pod-b"]
    back = PromotionState.from_status(status)
    assert back == analyzing


def test_the_agent_role_covers_a_candidate_fetched_from_s3() -> None:
    s3 = {"endpoint": "https://s3.example", "bucket": "lora", "key": "v2.tar", "credentialsSecretRef": {"name": "s3"}}
    candidate = parse_target({"version": "v2", "sha256": V2, "source": {"s3": s3}})
    started = plan(candidate, policy(strategy="Canary"), START, pods(), 0.0).state
    record = AdapterRecord("ns", "pro", "uid", "llama", target=STABLE, desired=candidate, promotion=started)
    assert record.targets() == [STABLE, candidate, candidate]
    ctx = SimpleNamespace(aggregator=SimpleNamespace(adapters_of=lambda namespace, model: [record]))
    assert agent_secrets(ctx, "ns", "llama", {"s3"}) == ("s3",)  # type: ignore[arg-type]
    # A Secret the model does not allow is never granted, whatever the adapter names.
    assert agent_secrets(ctx, "ns", "llama", {"other"}) == ()  # type: ignore[arg-type]
