"""SaigonAdapter and SaigonModel status from per-pod reports (pure)."""

from __future__ import annotations

import pytest
from saigon_contract.reports import AdapterReport, PodReport
from saigon_contract.specs import SpecError, parse_target
from saigon_operator.status import (
    AdapterFacts,
    ModelFacts,
    PodView,
    adapter_status,
    find_condition,
    model_status,
    pod_view,
)

SHA1, SHA2 = "1" * 64, "2" * 64
NOW = "2026-01-01T00:00:00Z"
T2 = parse_target({"version": "v2", "sha256": SHA2, "source": {"https": {"url": "https://a.example/v2.tar"}}})


def pod(name: str, report: AdapterReport | None, *, phase: str = "Running", deleting: bool = False) -> PodView:
    adapters = {"user_1": report} if report else {}
    return PodView(name, phase, ready=True, deleting=deleting, spec_hash="h", report=PodReport(adapters=adapters))


def facts(**overrides: object) -> AdapterFacts:
    values: dict[str, object] = {"adapter_name": "user_1", "generation": 3, "target": T2}
    values.update(overrides)
    return AdapterFacts(**values)  # type: ignore[arg-type]


LOADED_V2 = AdapterReport("Loaded", target="v2", version="v2", digest=SHA2, loaded_at=NOW)
LOADED_V1 = AdapterReport("Loaded", target="v1", version="v1", digest=SHA1, loaded_at=NOW)
FAILED_V2 = AdapterReport(
    "Failed", target="v2", version="v1", digest=SHA1, reason="DigestMismatch", error="sha256 is x"
)


def test_ready_only_when_every_running_pod_serves_the_target_digest() -> None:
    status = adapter_status(facts(), [pod("p1", LOADED_V2), pod("p2", LOADED_V2), pod("p3", LOADED_V1)], None, NOW)
    assert (status["phase"], status["serving"], status["replicasServing"]) == ("Syncing", "2/3", 2)
    assert find_condition(status["conditions"], "Ready")["status"] == "False"  # type: ignore[index]
    by_pod = {p["pod"]: p for p in status["pods"]}
    assert by_pod["p3"]["version"] == "v1" and by_pod["p1"]["digest"] == SHA2
    status = adapter_status(facts(), [pod("p1", LOADED_V2), pod("p2", LOADED_V2)], status["conditions"], NOW)
    ready = find_condition(status["conditions"], "Ready")
    assert ready is not None and ready["status"] == "True" and ready["reason"] == "AllReplicasServing"
    assert ready["observedGeneration"] == 3


def test_a_pod_with_the_right_version_but_another_digest_does_not_count() -> None:
    wrong = AdapterReport("Loaded", target="v2", version="v2", digest=SHA1)
    assert adapter_status(facts(), [pod("p1", wrong)], None, NOW)["replicasServing"] == 0


def test_failures_degrade_and_name_the_pods() -> None:
    status = adapter_status(facts(), [pod("p1", LOADED_V2), pod("p2", FAILED_V2)], None, NOW)
    assert status["phase"] == "Degraded"
    degraded = find_condition(status["conditions"], "Degraded")
    assert degraded and degraded["status"] == "True" and degraded["reason"] == "DigestMismatch"
    assert "p2: sha256 is x" in degraded["message"]
    assert adapter_status(facts(), [pod("p2", FAILED_V2)], None, NOW)["phase"] == "Failed"


def test_pods_not_running_or_leaving_are_not_replicas() -> None:
    status = adapter_status(
        facts(), [pod("p1", LOADED_V2), pod("p2", None, phase="Pending"), pod("p3", None, deleting=True)], None, NOW
    )
    assert status["serving"] == "1/1" and status["phase"] == "Ready"
    assert adapter_status(facts(), [], None, NOW)["phase"] == "Pending"


@pytest.mark.parametrize(
    ("override", "phase", "reason"),
    [
        ({"invalid": SpecError("InvalidSpec", "bad")}, "Invalid", "InvalidSpec"),
        ({"conflict_with": "other"}, "Conflict", "Conflict"),
        ({"deleting": True}, "Deleting", "Deleting"),
    ],
)
def test_spec_problems_win_over_pod_state(override: dict[str, object], phase: str, reason: str) -> None:
    status = adapter_status(facts(**override), [pod("p1", LOADED_V2)], None, NOW)
    assert status["phase"] == phase
    assert find_condition(status["conditions"], "Ready")["reason"] == reason  # type: ignore[index]


def test_transition_time_moves_only_when_status_flips() -> None:
    first = adapter_status(facts(), [pod("p1", LOADED_V1)], None, "2026-01-01T00:00:00Z")
    same = adapter_status(facts(), [pod("p1", LOADED_V1)], first["conditions"], "2026-01-01T00:05:00Z")
    flipped = adapter_status(facts(), [pod("p1", LOADED_V2)], same["conditions"], "2026-01-01T00:09:00Z")
    times = [find_condition(s["conditions"], "Ready")["lastTransitionTime"] for s in (first, same, flipped)]  # type: ignore[index]
    assert times == ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "2026-01-01T00:09:00Z"]


def test_pod_view_reads_phase_readiness_and_report() -> None:
    body = {
        "metadata": {
            "name": "p1",
            "annotations": {"saigon.ai/adapters": PodReport({"user_1": LOADED_V2}, synced=True).encode()},
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    view = pod_view(body)
    assert view.active and view.ready and view.report.synced
    assert view.report.adapters["user_1"] == LOADED_V2


def test_model_status_counts_ready_and_updated_pods() -> None:
    pods = [
        PodView("a", "Running", True, False, "new", PodReport({"user_1": LOADED_V2})),
        PodView("b", "Running", False, False, "old", PodReport({"user_1": FAILED_V2})),
        PodView("c", "Pending", False, False, "new", PodReport()),
    ]
    status = model_status(ModelFacts(2, 2, "new", "sel", adapters=4), pods, None, NOW)
    assert (status["replicas"], status["readyReplicas"], status["updatedReplicas"]) == (2, 1, 2)
    assert status["adapters"] == 4
    assert {p["name"]: (p["adaptersLoaded"], p["adaptersFailed"]) for p in status["pods"]} == {
        "a": (1, 0),
        "b": (0, 1),
        "c": (0, 0),
    }
    assert find_condition(status["conditions"], "Ready")["status"] == "False"  # type: ignore[index]
    assert find_condition(status["conditions"], "Progressing")["status"] == "True"  # type: ignore[index]
