"""Pure builder: the NetworkPolicy that fences a SaigonModel's runtime pods.

Ingress to the runtime port comes only from the model's router pods and the peers listed in
spec.networkPolicy.runtimeFrom (a gateway, Prometheus); with neither, from pods of the
model's namespace. The agent port gets no rule unless agentFrom lists peers: Kubernetes
always admits traffic from the pod's own node, which is where the kubelet's probes come from.
"""

from __future__ import annotations

from typing import Any

from saigon_contract import resources as r
from saigon_contract.specs import ModelSpec
from saigon_operator.builders.model import Owner, child_meta, selector_labels
from saigon_operator.builders.router import router_selector


def network_policy_name(model: str) -> str:
    return f"{model}-runtime"


def build_network_policy(owner: Owner, spec: ModelSpec) -> dict[str, Any]:
    options = spec.network_policy
    runtime_from = [peer.as_dict() for peer in options.runtime_from]
    if spec.router.enabled:
        runtime_from.insert(0, {"podSelector": {"matchLabels": router_selector(owner.name)}})
    if not runtime_from:
        runtime_from = [{"podSelector": {}}]  # the model's own namespace
    ingress: list[dict[str, Any]] = [
        {"from": runtime_from, "ports": [{"protocol": "TCP", "port": spec.port}]},
    ]
    if options.agent_from:
        ingress.append(
            {
                "from": [peer.as_dict() for peer in options.agent_from],
                "ports": [{"protocol": "TCP", "port": r.AGENT_HEALTH_PORT}],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_meta(owner, network_policy_name(owner.name)),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(owner.name)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
