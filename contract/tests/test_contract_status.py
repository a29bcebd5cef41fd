from typing import Any

from saigon_contract.specs import EvalPrompt, parse_target
from saigon_contract.status import IN_FLIGHT_FIELDS, PromotionStatus

CANDIDATE: dict[str, Any] = {"version": "v2", "sha256": "b" * 64, "source": {"https": {"url": "https://e.example/b"}}}


def test_the_candidate_goes_to_the_pods_its_stage_names() -> None:
    target = parse_target(CANDIDATE)
    canary = PromotionStatus(candidate=target, stage="Canary", canary_pods=("pod-a",))
    assert canary.assigned("pod-a") == target and canary.assigned("pod-b") is None
    assert PromotionStatus(candidate=target, stage="Full").assigned("pod-b") == target
    assert PromotionStatus(candidate=target, stage="Waiting", canary_pods=("pod-a",)).assigned("pod-a") is None
    assert PromotionStatus(stage="Full").assigned("pod-a") is None


def test_what_the_operator_writes_the_agent_reads_back() -> None:
    written = PromotionStatus(
        phase="Canary",
        candidate=parse_target(CANDIDATE),
        version="v2",
        stage="Canary",
        canary_pods=("pod-a",),
        retain=("v1", "v2"),
        evaluation=(EvalPrompt(prompt="2+2=", expect="4"),),
        collect_stats=True,
    ).to_status()
    assert written["canaryPods"] == ["pod-a"] and written["collectStats"] is True
    assert written["evaluation"] == [{"prompt": "2+2=", "expect": "4", "maxTokens": 16}]
    read = PromotionStatus.read(written)
    assert read.assigned("pod-a") == parse_target(CANDIDATE) and read.retain == ("v1", "v2")
    assert read.evaluation == (EvalPrompt(prompt="2+2=", expect="4"),)


def test_no_candidate_writes_every_in_flight_field_as_null() -> None:
    written = PromotionStatus(phase="Stable", stage="Canary", canary_pods=("pod-a",)).to_status()
    assert all(written[key] is None for key in IN_FLIGHT_FIELDS)


def test_unreadable_fields_read_as_absent_and_bad_prompts_as_skipped() -> None:
    read = PromotionStatus.read(
        {
            "candidate": {**CANDIDATE, "version": "../x"},
            "stage": "Sideways",
            "canaryPods": "pod-a",
            "retain": ["v1"],
            "evaluation": [{"prompt": "no check"}, {"prompt": "2+2=", "expect": "4"}],
        }
    )
    assert read.candidate is None and read.stage is None and read.canary_pods == () and read.retain == ("v1",)
    assert read.evaluation == (EvalPrompt(prompt="2+2=", expect="4"),)
    assert PromotionStatus.read("garbage") == PromotionStatus()
