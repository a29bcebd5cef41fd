"""The chart's agent policy on the real API server: an agent changes only its own pod's report.

The agent's Role (saigon_operator.builders.model.build_role) grants pod patches in the whole
namespace; the chart's ValidatingAdmissionPolicy narrows that to the pod the agent's token is
bound to, and to the agent's own annotation and readiness condition.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controlplane.cluster import Cluster
from controlplane.waiting import eventually
from saigon_chart import documents, template
from saigon_contract import resources as r
from saigon_contract.kube import ApiError, Credentials, KubeClient, object_path
from saigon_e2e.world import install_crds
from saigon_operator.builders.model import Owner, build_role, build_role_binding, build_service_account, names_for

MODEL = "m"


def pod(name: str, service_account: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"serviceAccountName": service_account, "containers": [{"name": "c", "image": "busybox:1"}]},
    }


def patch_as(kubeconfig: Path, namespace: str, target: str, body: str, *subresource: str) -> str | None:
    """None when allowed, else the API server's refusal; sent as the agent sends it."""

    async def send() -> str | None:
        kube = KubeClient(Credentials.load(str(kubeconfig)))
        try:
            await kube.strategic_patch(object_path("Pod", namespace, target, *subresource), json.loads(body))
            return None
        except ApiError as error:
            assert error.status == 403, error
            return error.message
        finally:
            await kube.close()

    return asyncio.run(send())


def report_patch(text: str) -> str:
    return json.dumps({"metadata": {"annotations": {r.REPORT_ANNOTATION: text}}})


def gate_patch(status: str) -> str:
    return json.dumps({"status": {"conditions": [{"type": r.READINESS_GATE, "status": status}]}})


@pytest.fixture
def namespace(k8s_cluster: Cluster, k8s_namespace: str) -> Iterator[str]:
    install_crds(k8s_cluster)
    rendered = template(
        namespace=k8s_namespace, release=k8s_namespace[:20], extra=("--show-only", "templates/agent-policy.yaml")
    )
    policies = documents(rendered)
    assert [d["kind"] for d in policies] == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    k8s_cluster.kubectl("apply", "--server-side", "-f", "-", input=rendered)
    model = {
        "apiVersion": r.API_VERSION, "kind": r.MODEL_KIND, "metadata": {"name": MODEL},
        "spec": {"baseModel": {"path": "/m"}, "image": "saigon/runtime:1", "tokenSecretRef": {"name": "t"}},
    }  # fmt: skip
    owner = Owner(MODEL, k8s_namespace, "uid-not-checked")
    children = [build_service_account(owner), build_role(owner), build_role_binding(owner)]
    for child in children:
        child["metadata"].pop("ownerReferences")  # no SaigonModel uid to point at in this test
    docs = [model, *children]
    docs.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "other-workload"}})
    k8s_cluster.kubectl("apply", "--server-side", "-n", k8s_namespace, "-f", "-",
                        input="\n---\n".join(json.dumps(d) for d in docs))  # fmt: skip
    agent_sa = names_for(MODEL)["service_account"]
    pods = [
        pod("runtime-1", agent_sa, {r.MODEL_LABEL: MODEL}),
        pod("runtime-2", agent_sa, {r.MODEL_LABEL: MODEL}),
        pod("victim", "other-workload", {"app": "billing"}),
    ]
    k8s_cluster.kubectl("apply", "-n", k8s_namespace, "-f", "-", input="\n---\n".join(json.dumps(p) for p in pods))
    yield k8s_namespace
    for policy in policies:
        k8s_cluster.kubectl("delete", policy["kind"].lower(), policy["metadata"]["name"], "--ignore-not-found")


def test_an_agent_changes_only_its_own_pods_report(k8s_cluster: Cluster, namespace: str) -> None:
    agent_sa = names_for(MODEL)["service_account"]
    agent = k8s_cluster.kubeconfig_for_pod(namespace, agent_sa, "runtime-1")

    def patch(target: str, body: str, *subresource: str, as_: Path = agent) -> str | None:
        return patch_as(as_, namespace, target, body, *subresource)

    # The policy takes effect once the API server's informers have it (and the SaigonModel param).
    eventually(lambda: patch("victim", report_patch("{}")) is not None, timeout=30, what="the policy is in force")

    # Its own pod: the report and the readiness condition.
    assert patch("runtime-1", report_patch('{"adapters":{}}')) is None
    assert patch("runtime-1", gate_patch("True"), "status") is None
    # Nothing else of its own pod: labels (into another Service), image, other annotations, phase.
    refused = {
        "own labels": patch("runtime-1", json.dumps({"metadata": {"labels": {"app": "billing"}}})),
        "own image": patch("runtime-1", json.dumps({"spec": {"containers": [{"name": "c", "image": "evil:1"}]}})),
        "own other annotation": patch("runtime-1", json.dumps({"metadata": {"annotations": {"x": "y"}}})),
        "own other condition": patch(
            "runtime-1", json.dumps({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            "status",
        ),
        # Another pod of the same model, and another workload's pod.
        "sibling report": patch("runtime-2", report_patch('{"adapters":{"forged":{}}}')),
        "sibling gate": patch("runtime-2", gate_patch("True"), "status"),
        "victim image": patch("victim", json.dumps({"spec": {"containers": [{"name": "c", "image": "evil:1"}]}})),
        "victim labels": patch("victim", json.dumps({"metadata": {"labels": {r.MODEL_LABEL: MODEL}}})),
        "victim report": patch("victim", report_patch('{"adapters":{}}')),
    }  # fmt: skip
    allowed = [what for what, refusal in refused.items() if refusal is None]
    assert not allowed, f"the agent could change: {allowed}"
    assert "may change only its own pod (runtime-1), not victim" in str(refused["victim image"])
    assert "may change only its report annotation" in str(refused["own labels"])
    # A token that is not bound to a pod (not what a kubelet projects) changes no pod at all.
    unbound = k8s_cluster.kubeconfig_for_service_account(namespace, agent_sa)
    assert "its token is not bound to a pod" in str(patch("runtime-1", report_patch("{}"), as_=unbound))
    # Other service accounts are none of the policy's business.
    k8s_cluster.kubectl("create", "role", "pod-patcher", "--verb=patch", "--resource=pods", "-n", namespace)
    k8s_cluster.kubectl("create", "rolebinding", "pod-patcher", "--role=pod-patcher",
                        "--serviceaccount", f"{namespace}:other-workload", "-n", namespace)  # fmt: skip
    other = k8s_cluster.kubeconfig_for_pod(namespace, "other-workload", "victim")
    relabel = json.dumps({"metadata": {"labels": {"team": "x"}}})
    eventually(lambda: patch("runtime-2", relabel, as_=other) is None, timeout=30, what="another workload may")


def test_an_agent_under_a_users_service_account_is_held_to_its_own_pod(k8s_cluster: Cluster, namespace: str) -> None:
    """spec.pod.serviceAccountName: the operator binds the agent's Role to the user's account, and
    the policy holds that account to the same rule (its own pod's report, nothing else)."""
    byo = {
        "apiVersion": r.API_VERSION, "kind": r.MODEL_KIND, "metadata": {"name": "byo"},
        "spec": {"baseModel": {"path": "/m"}, "image": "saigon/runtime:1", "tokenSecretRef": {"name": "t"},
                 "pod": {"serviceAccountName": "team-irsa"}},
    }  # fmt: skip
    binding = build_role_binding(Owner("byo", namespace, "uid-not-checked"), "team-irsa")
    role = build_role(Owner("byo", namespace, "uid-not-checked"))
    for child in (binding, role):
        child["metadata"].pop("ownerReferences")
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "team-irsa"}}
    docs = [byo, account, role, binding, pod("byo-1", "team-irsa", {r.MODEL_LABEL: "byo"})]
    k8s_cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-",
                        input="\n---\n".join(json.dumps(d) for d in docs))  # fmt: skip
    agent = k8s_cluster.kubeconfig_for_pod(namespace, "team-irsa", "byo-1")

    def patch(target: str, body: str, *subresource: str) -> str | None:
        return patch_as(agent, namespace, target, body, *subresource)

    eventually(lambda: patch("victim", report_patch("{}")) is not None, timeout=30, what="the policy covers team-irsa")
    assert patch("byo-1", report_patch('{"adapters":{}}')) is None
    assert patch("byo-1", gate_patch("True"), "status") is None
    assert "may change only its own pod (byo-1), not runtime-1" in str(patch("runtime-1", report_patch("{}")))
    assert "may change only its report annotation" in str(
        patch("byo-1", json.dumps({"metadata": {"labels": {"app": "billing"}}}))
    )
