"""Which adapters a pod must serve, from the SaigonAdapter objects of its model."""

from __future__ import annotations

from typing import Any

from saigon_agent.desired import DesiredBook, desired_from

SHA = "a" * 64


def obj(
    uid: str,
    name: str | None,
    version: str | None = "v1",
    *,
    created: str = "2026-01-01T00:00:00Z",
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": uid, "name": f"cr-{uid}", "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-02T00:00:00Z"
    status: dict[str, Any] = {}
    if name:
        status["adapterName"] = name
    if version:
        status["target"] = {"version": version, "sha256": SHA, "source": {"https": {"url": "https://e.example/a.tar"}}}
    return {"metadata": meta, "status": status}


def test_objects_without_a_validated_target_are_kept_not_served() -> None:
    book = DesiredBook()
    book.upsert(obj("u1", "user_1", version=None))
    assert book.decide("user_1").action == "keep"
    assert desired_from(obj("u2", None)) is None
    assert desired_from(obj("u3", "../etc")) is None


def test_serve_then_change_version_then_delete() -> None:
    book = DesiredBook()
    assert book.upsert(obj("u1", "user_1", "v1")) == {"user_1"}
    decision = book.decide("user_1")
    assert decision.action == "serve" and decision.desired and decision.desired.target
    assert decision.desired.target.version == "v1"
    book.upsert(obj("u1", "user_1", "v2"))
    assert book.decide("user_1").desired.target.version == "v2"  # type: ignore[union-attr]
    book.upsert(obj("u1", "user_1", "v2", deleting=True))
    assert book.decide("user_1").action == "remove"
    assert book.delete(obj("u1", "user_1")) == {"user_1"}
    assert book.decide("user_1").action == "remove"


def test_deleting_a_conflicting_duplicate_does_not_remove_the_served_adapter() -> None:
    book = DesiredBook()
    book.upsert(obj("old", "user_1", "v1", created="2026-01-01T00:00:00Z"))
    book.upsert(obj("dup", "user_1", None, created="2026-01-05T00:00:00Z"))  # the operator gave it no target
    book.upsert(obj("dup", "user_1", None, deleting=True))
    decision = book.decide("user_1")
    assert decision.action == "serve" and decision.desired and decision.desired.uid == "old"


def test_relist_reports_vanished_and_changed_names() -> None:
    book = DesiredBook()
    book.upsert(obj("u1", "user_1"))
    book.upsert(obj("u2", "user_2"))
    changed = book.replace_all([obj("u2", "user_2"), obj("u3", "user_3")])
    assert changed == {"user_1", "user_3"}
    assert book.names() == {"user_2", "user_3"}


def with_promotion(stage: str, canary_pods: list[str], **extra: Any) -> dict[str, Any]:
    body = obj("u1", "user_1", "v1")
    candidate = {"version": "v2", "sha256": "b" * 64, "source": {"https": {"url": "https://e.example/b.tar"}}}
    body["status"]["promotion"] = {
        "candidate": candidate,
        "stage": stage,
        "canaryPods": canary_pods,
        "allPods": stage == "Full",
        "retain": ["v1", "v2"],
        "evaluation": [
            {"prompt": "2+2=", "expect": "4", "maxTokens": 3},
            {"prompt": "2+2=", "completion": " 4", "maxLoss": 2},
            {"prompt": "ignored: neither check"},
        ],
        "collectStats": True,
        **extra,
    }
    return body


def test_each_pod_serves_the_version_its_promotion_assigns_it() -> None:
    canary = with_promotion("Canary", ["pod-a"])
    on_canary = desired_from(canary, "pod-a")
    assert on_canary and on_canary.target and on_canary.target.version == "v2" and on_canary.candidate
    assert on_canary.evaluation[0].expect == "4" and on_canary.collect_stats and on_canary.retain == {"v1", "v2"}
    assert len(on_canary.evaluation) == 2 and on_canary.evaluation[1].expect is None
    assert (on_canary.evaluation[1].completion, on_canary.evaluation[1].max_loss) == (" 4", 2.0)
    elsewhere = desired_from(canary, "pod-b")
    assert elsewhere and elsewhere.target and elsewhere.target.version == "v1"
    assert not elsewhere.candidate and not elsewhere.evaluation and not elsewhere.collect_stats
    everyone = desired_from(with_promotion("Full", []), "pod-b")
    assert everyone and everyone.target and everyone.target.version == "v2"
    # Waiting for approval: nobody takes the candidate; a rollback writes null and every pod returns.
    assert desired_from(with_promotion("Waiting", []), "pod-a").target.version == "v1"  # type: ignore[union-attr]
    rolled_back = with_promotion("Canary", ["pod-a"])
    rolled_back["status"]["promotion"].update(candidate=None, canaryPods=None, stage=None, allPods=None)
    assert desired_from(rolled_back, "pod-a").target.version == "v1"  # type: ignore[union-attr]


def test_the_book_decides_for_its_own_pod() -> None:
    book = DesiredBook("pod-a")
    book.upsert(with_promotion("Canary", ["pod-a"]))
    assert book.decide("user_1").desired.target.version == "v2"  # type: ignore[union-attr]
    assert book.upsert(obj("u1", "user_1", "v1")) == {"user_1"}  # the rollback reaches the syncer
    assert book.decide("user_1").desired.target.version == "v1"  # type: ignore[union-attr]


def test_a_candidate_passes_its_evaluation_only_if_every_answer_holds_its_text_and_keeps_its_loss_low() -> None:
    from saigon_agent.gates import judge
    from saigon_agent.runtime_client import EvalAnswer

    checks = desired_from(with_promotion("Full", []), "pod-a")
    assert checks is not None
    good = [EvalAnswer("2+2=4", None), EvalAnswer("", 1.5)]
    assert judge(checks.evaluation, good) == (True, "2 evaluation prompts passed")
    assert judge(checks.evaluation, [EvalAnswer("5", None), good[1]]) == (
        False, "evaluation prompt 1 of 2: the answer lacks the expected text",
    )  # fmt: skip
    assert judge(checks.evaluation, [good[0], EvalAnswer("", 2.25)]) == (
        False, "evaluation prompt 2 of 2: completion loss 2.250 > maxLoss 2",
    )  # fmt: skip
    assert judge(checks.evaluation, [good[0], EvalAnswer("", None)])[1].endswith("loss not reported > maxLoss 2")


def test_a_pod_serves_only_what_is_placed_on_it() -> None:
    book = DesiredBook("llama-a")
    placed = obj("u1", "user_1")
    placed["status"]["placement"] = {"allReplicas": False, "slot": 7, "pods": ["llama-b", "llama-a"]}
    book.upsert(placed)
    assert book.decide("user_1").action == "serve"
    placed["status"]["placement"]["pods"] = ["llama-b", "llama-c"]
    assert book.upsert(placed) == {"user_1"}
    assert book.decide("user_1").action == "elsewhere"
    # Shared adapters, statuses of operators without placement, and unreadable ones: every pod.
    for placement in ({"allReplicas": True}, None, {"slot": "seven"}):
        shared = obj("u2", "global")
        if placement is not None:
            shared["status"]["placement"] = placement
        book.upsert(shared)
        assert book.decide("global").action == "serve"
    # A deleted adapter is removed wherever it lingers.
    placed["metadata"]["deletionTimestamp"] = "2026-01-02T00:00:00Z"
    book.upsert(placed)
    assert book.decide("user_1").action == "remove"
