"""Zero-downtime promotion end to end, under continuous load from real HTTP clients.

Real API server, operator, agents and runtimes (3 replicas) on 127.0.0.1, as in
test_operator_e2e.py. Client threads keep sending completions to every replica while
new versions roll out: Immediate, Canary with metric gates, a bad version that fails
its evaluation gate and one that fails to load (both roll back by themselves), and
a Manual one that waits for its approval. Ground truth comes from the runtimes'
admin API and from what the clients received, not only from status.

The figures for the promotion note (requests, failures, p50/p99 latency in steady
state and during a promotion) print as `[measure]` lines; run with `-s` to see them:

    .venv/bin/python -m pytest tests/test_promotion_e2e.py -s -q
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from controlplane.cluster import Cluster
from saigon_e2e.artifacts import Artifact, make_artifact
from saigon_e2e.load import Answer, Load, summarize
from saigon_e2e.world import World, running_world

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

REPLICAS = 3
OBJECT, ADAPTER = "pro", "user_pro"
RESULTS = os.environ.get("SAIGON_PROMOTION_RESULTS")  # optional JSON file for the measured figures
ANALYSIS_S = 4


@pytest.fixture(scope="module")
def world(
    k8s_cluster: Cluster, k8s_api_client: kubernetes.client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("promotion-e2e")
    with running_world(
        k8s_cluster, k8s_api_client, workdir, prefix="e2e-promotion", replicas=REPLICAS, source_dirs=(),
        results=RESULTS,
    ) as w:  # fmt: skip
        yield w


@pytest.fixture(scope="module")
def versions(world: World) -> dict[str, Artifact]:
    base, out = world.base_model, world.workdir / "artifacts"
    return {f"v{i}": make_artifact(base, out / f"v{i}", seed=200 + i) for i in range(1, 7)}


def apply(world: World, version: str, artifact: Artifact, **promotion: Any) -> None:
    spec: dict[str, Any] = {"promotion": promotion} if promotion else {}
    world.kubectl_apply(world.adapter_manifest(OBJECT, user="pro", version=version, artifact=artifact, **spec))


def promotion(world: World) -> dict[str, Any]:
    status = (world.get_adapter(OBJECT) or {}).get("status") or {}
    return dict(status.get("promotion") or {})


def promoted(world: World, version: str) -> dict[str, Any] | None:
    status = world.served_everywhere(OBJECT, version)
    return status if status and status["promotion"]["phase"] == "Stable" else None


def check_answers(answers: list[Answer], allowed: set[str]) -> None:
    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed: {failed[:3]}"
    wrong = [a for a in answers if len(a.versions) != 1 or a.versions[0] not in allowed]
    assert not wrong, f"{len(wrong)} answers do not carry exactly one of {allowed}: {wrong[:3]}"


def measure(world: World, key: str, answers: list[Answer]) -> None:
    summary = summarize(answers)
    world.timings[f"{key}_requests"] = summary.requests
    world.timings[f"{key}_failed"] = summary.failed
    world.timings[f"{key}_p50_ms"] = round(summary.p50_ms, 1)
    world.timings[f"{key}_p99_ms"] = round(summary.p99_ms, 1)
    print(f"\n[measure] {key}: {summary.line()}")


def urls(world: World) -> list[str]:
    return [pod.runtime_url for pod in world.pods]


def test_immediate_promotions_under_load_fail_no_request(world: World, versions: dict[str, Artifact]) -> None:
    """Five promotions in a row (v1 -> r1 -> ... -> r4 -> v2) while four clients keep sending."""
    rounds = {
        f"r{i}": make_artifact(world.base_model, world.workdir / "artifacts" / f"r{i}", seed=300 + i)
        for i in (1, 2, 3, 4)
    }
    rounds["v2"] = versions["v2"]
    apply(world, "v1", versions["v1"])
    world.wait_for(lambda: promoted(world, "v1"), 60, "v1 served everywhere")
    windows: list[tuple[float, float]] = []
    with Load(urls(world), ADAPTER, clients=4) as load:
        time.sleep(1.0)  # first answers warm each runtime up
        steady_from = time.monotonic()
        time.sleep(5.0)
        steady_to = time.monotonic()
        previous = "v1"
        for version, artifact in rounds.items():
            started = time.monotonic()
            apply(world, version, artifact)
            status = world.wait_for(lambda v=version: promoted(world, v), 60, f"{version} promoted on every replica")
            done = time.monotonic()
            windows.append((started, done))
            time.sleep(1.0)
            answers = load.between(started, done)
            check_answers(answers, {previous, version})
            assert all(a.versions == (version,) for a in load.after(done)), summarize(load.after(done)).line()
            previous = version
    check_answers(load.answers, {"v1", *rounds})
    assert world.runtimes_serve(ADAPTER, "v2")
    history = [(h["version"], h["outcome"]) for h in status["promotion"]["history"]]
    assert history == [("v1", "Promoted")] + [(v, "Promoted") for v in rounds]
    measure(world, "steady", load.between(steady_from, steady_to))
    measure(world, "immediate_promotions", [a for s, e in windows for a in load.between(s, e)])
    world.timings["immediate_promotion_median_s"] = round(sorted(e - s for s, e in windows)[len(windows) // 2], 3)
    print(f"\n[measure] apply to promoted on {REPLICAS} replicas: {[round(e - s, 2) for s, e in windows]} s")
    # Old versions stay on disk only as long as a rollback may need them.
    world.wait_for(
        lambda: all(
            sorted(p.name for p in (pod.adapters_dir / ADAPTER).iterdir() if p.name.startswith(("v", "r"))) == ["v2"]
            for pod in world.pods
        ),
        30,
        "old version files removed",
    )


def test_canary_holds_one_pod_through_the_analysis_window_then_rolls_out(
    world: World, versions: dict[str, Artifact]
) -> None:
    policy = {
        "strategy": "Canary",
        "canary": {"replicas": "30%", "analysisSeconds": ANALYSIS_S},
        "gates": {
            "maxErrorRate": 0.01,
            "maxP99LatencyMs": 60000,
            # Scored by the candidate itself on each pod: a generous bound a real loss always meets.
            "evaluation": [{"prompt": "the cat sat", "completion": " on the mat", "maxLoss": 1000}],
        },
    }
    with Load(urls(world), ADAPTER, clients=4) as load:
        time.sleep(1.0)
        started = time.monotonic()
        apply(world, "v3", versions["v3"], **policy)
        analyzing = world.wait_for(lambda: (p := promotion(world)).get("phase") == "Analyzing" and p, 60, "canary")
        seen_analyzing = time.monotonic()
        # Ground truth: exactly the canary pod serves v3, the others v2.
        assert len(analyzing["canaryPods"]) == 1 and analyzing["progress"] == f"1/{REPLICAS}"
        served = {p.name: world.runtime_adapters(p)[ADAPTER]["version"] for p in world.pods}
        assert served == {name: "v3" if name in analyzing["canaryPods"] else "v2" for name in served}
        world.wait_for(lambda: promotion(world).get("stage") == "Full" or promoted(world, "v3"), 60, "canary passed")
        assert time.monotonic() - seen_analyzing >= ANALYSIS_S - 1.5  # the window held
        status = world.wait_for(lambda: promoted(world, "v3"), 60, "v3 promoted on every replica")
        done = time.monotonic()
        time.sleep(2.0)
    check_answers(load.answers, {"v2", "v3"})
    assert all(a.versions == ("v3",) for a in load.after(done))
    during = load.between(started, done)
    assert {a.versions[0] for a in during} == {"v2", "v3"}  # both served side by side during the canary
    assert status["promotion"]["history"][-1]["outcome"] == "Promoted"
    reasons = [r for _, r, _ in world.events_for(OBJECT)]
    assert {"PromotionStarted", "CanaryStarted", "CanaryPassed", "Promoted"} <= set(reasons)
    measure(world, "canary_promotion", during)
    world.timings["canary_promotion_s"] = round(done - started, 3)


def test_a_bad_version_rolls_back_by_itself_while_the_good_one_keeps_serving(
    world: World, versions: dict[str, Artifact]
) -> None:
    gate = {"evaluation": [{"prompt": "the cat sat", "expect": "no tiny model says this", "maxTokens": 4}]}
    with Load(urls(world), ADAPTER, clients=4) as load:
        time.sleep(0.5)
        apply(world, "v4", versions["v4"], strategy="Canary", canary={"analysisSeconds": ANALYSIS_S}, gates=gate)
        rolled = world.wait_for(lambda: (p := promotion(world)).get("phase") == "RolledBack" and p, 60, "rollback")
        time.sleep(1.0)
    # The candidate failed its evaluation before it took any traffic: every answer came from v3.
    check_answers(load.answers, {"v3"})
    last = rolled["history"][-1]
    assert (last["version"], last["outcome"]) == ("v4", "RolledBack") and "EvaluationFailed" in last["reason"]
    assert last["digest"] == versions["v4"].sha256
    assert ("Warning", "RolledBack") in {(t, r) for t, r, _ in world.events_for(OBJECT)}
    assert world.runtimes_serve(ADAPTER, "v3")
    world.wait_for(lambda: world.served_everywhere(OBJECT, "v3"), 30, "the canary pod reports v3 again")
    world.wait_for(lambda: all(not (p.adapters_dir / ADAPTER / "v4").exists() for p in world.pods), 30, "v4 removed")
    measure(world, "rollback", load.answers)

    # A version that fails to load on the pods rolls back as well (an Immediate one: every pod tried it).
    garbage = b"not a tar archive " * 64
    world.kubectl_apply(
        world.adapter_manifest(
            OBJECT, user="pro", version="v5",
            url=world.sources.put("pro/v5.tar", garbage), sha256=hashlib.sha256(garbage).hexdigest(),
        )
    )  # fmt: skip
    rolled = world.wait_for(
        lambda: (p := promotion(world)).get("phase") == "RolledBack" and p["history"][-1]["version"] == "v5" and p,
        60,
        "v5 rolled back",
    )
    assert "InvalidArtifact" in rolled["history"][-1]["reason"]
    world.wait_for(lambda: world.served_everywhere(OBJECT, "v3"), 30, "every pod back on v3")
    assert world.runtimes_serve(ADAPTER, "v3")
    assert world.operator.metric("saigon_operator_promotions_total", outcome="RolledBack") == 2
    assert world.operator.metric("saigon_operator_promotions_total", outcome="Promoted") == 6


def test_manual_waits_for_its_approval_then_proceeds(world: World, versions: dict[str, Artifact]) -> None:
    apply(world, "v6", versions["v6"], strategy="Manual")
    world.wait_for(lambda: promotion(world).get("phase") == "AwaitingApproval", 30, "awaiting approval")
    time.sleep(2.0)
    assert promotion(world)["phase"] == "AwaitingApproval" and world.runtimes_serve(ADAPTER, "v3")
    row = world.cluster.kubectl("get", "sga", OBJECT, "-n", world.namespace).splitlines()[1].split()
    assert "AwaitingApproval" in row and f"0/{REPLICAS}" in row
    with Load(urls(world), ADAPTER, clients=2) as load:
        world.cluster.kubectl("annotate", "sga", OBJECT, "-n", world.namespace, "saigon.ai/approve=v6")
        world.wait_for(lambda: promoted(world, "v6"), 60, "v6 promoted after the approval")
        done = time.monotonic()
        time.sleep(1.0)
    check_answers(load.answers, {"v3", "v6"})
    assert all(a.versions == ("v6",) for a in load.after(done))
    assert world.runtimes_serve(ADAPTER, "v6")
    reasons = [r for _, r, _ in world.events_for(OBJECT)]
    assert "AwaitingApproval" in reasons and "Approved" in reasons
    row = world.cluster.kubectl("get", "sga", OBJECT, "-n", world.namespace).splitlines()[1].split()
    assert "Stable" in row and f"{REPLICAS}/{REPLICAS}" in row


def test_an_operator_restart_mid_canary_resumes_from_status(world: World) -> None:
    artifact = make_artifact(world.base_model, world.workdir / "artifacts" / "v7", seed=207)
    apply(world, "v7", artifact, strategy="Canary", canary={"replicas": 1, "analysisSeconds": ANALYSIS_S})
    analyzing = world.wait_for(lambda: (p := promotion(world)).get("phase") == "Analyzing" and p, 60, "canary")
    world.operator.kill()
    world.operator.start()
    world.operator.wait_leading(timeout=60)
    status = world.wait_for(lambda: promoted(world, "v7"), 60, "v7 promoted by the restarted operator")
    history = status["promotion"]["history"]
    assert [(h["version"], h["outcome"]) for h in history[-2:]] == [("v6", "Promoted"), ("v7", "Promoted")]
    # Resumed from status, not started over: one start, one canary.
    started = [m for _, r, m in world.events_for(OBJECT) if r in ("PromotionStarted", "CanaryStarted") and "v7" in m]
    assert len(started) == 2, started
    assert analyzing["canaryPods"] and world.runtimes_serve(ADAPTER, "v7")
