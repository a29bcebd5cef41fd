"""Adapter Events within their model's budget, and the summary Event past it, on a real API server."""

from __future__ import annotations

from typing import Any

import kubernetes
from controlplane.cluster import Cluster
from fake_clock import Clock
from saigon_contract.kube import Credentials, KubeClient
from saigon_operator.events import EventBudget, EventRecorder


def test_the_budget_allows_a_burst_then_a_steady_rate_and_counts_the_rest() -> None:
    clock = Clock(100.0)
    budget = EventBudget(burst=3, per_second=0.5, clock=clock)
    taken = [budget.take("m", "Normal", "Served") for _ in range(5)]
    assert taken == [True, True, True, False, False]
    assert budget.take("m", "Warning", "SourceUnavailable"), "each event type has a budget of its own"
    assert budget.take("m", "Normal", "PromotionStarted"), "so has each reason: a flood of Served holds no promotion"
    assert budget.take("other-model", "Normal", "Served"), "each model has a budget of its own"
    clock.now += 2.0  # one event's worth at 0.5/s
    assert budget.take("m", "Normal", "Served") and not budget.take("m", "Normal", "Served")
    assert budget.drain() == {"m": {"Normal": {"Served": 3}}}
    assert budget.drain() == {}, "a drain empties what was held"


def _ref(kind: str, name: str, namespace: str) -> dict[str, str]:
    return {"apiVersion": "saigon.ai/v1alpha1", "kind": kind, "name": name, "namespace": namespace, "uid": f"u-{name}"}


def _events(api: kubernetes.client.ApiClient, namespace: str) -> list[Any]:
    return list(kubernetes.client.CoreV1Api(api).list_namespaced_event(namespace).items)


async def test_events_over_the_budget_become_one_summary_on_the_model(
    k8s_cluster: Cluster, k8s_api_client: kubernetes.client.ApiClient, k8s_namespace: str
) -> None:
    kube = KubeClient(Credentials.load(str(k8s_cluster.kubeconfig)))
    recorder = EventRecorder(kube, budget=EventBudget(burst=3, per_second=0.0))
    model = _ref("SaigonModel", "m", k8s_namespace)
    try:
        for i in range(10):
            await recorder.post_within_budget(_ref("SaigonAdapter", f"a{i}", k8s_namespace), model, "Normal",
                                              "Served", f"serving v1 on 2/2 pods (a{i})")  # fmt: skip
        await recorder.post_within_budget(_ref("SaigonAdapter", "a9", k8s_namespace), model, "Warning",
                                          "SourceUnavailable", "the source answered 404")  # fmt: skip
        await recorder.post_summaries()
        await recorder.post_summaries()  # nothing new held: no second summary
    finally:
        await kube.close()
    events = _events(k8s_api_client, k8s_namespace)
    served = sorted(e.involved_object.name for e in events if e.reason == "Served")
    assert served == ["a0", "a1", "a2"]
    assert [(e.involved_object.name, e.type) for e in events if e.reason == "SourceUnavailable"] == [("a9", "Warning")]
    summaries = [e for e in events if e.reason == "AdapterEventsSummarized"]
    assert len(summaries) == 1
    summary = summaries[0]
    assert (summary.involved_object.kind, summary.involved_object.name, summary.type) == ("SaigonModel", "m", "Normal")
    assert "7 adapter events" in summary.message and "Served x7" in summary.message
