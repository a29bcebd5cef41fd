"""The manifests a SaigonModel turns into (pure builders)."""

from __future__ import annotations

from typing import Any

from saigon_contract import resources as r
from saigon_contract.agent_env import ENV as AGENT_ENV
from saigon_contract.specs import parse_model_spec
from saigon_operator.builders.model import (
    PRESTOP_SLEEP_S,
    STOP_MARGIN_S,
    Defaults,
    Owner,
    build_children,
    build_deployment,
    build_role,
)

OWNER = Owner(name="llama", namespace="ml", uid="1234")
DEFAULTS = Defaults(agent_image="saigon/operator:1")


def spec(**overrides: Any):  # type: ignore[no-untyped-def]
    raw: dict[str, Any] = {
        "baseModel": {"pvc": {"claimName": "weights", "subPath": "llama-8b"}},
        "image": "saigon/runtime:1",
        "tokenSecretRef": {"name": "tokens"},
        "replicas": 3,
        "gpus": 1,
        "adapterSources": {"pvcs": ["team-adapters"], "allowedCidrs": ["10.0.0.0/8"]},
        "scheduling": {"nodeSelector": {"gpu": "a100"}, "tolerations": [{"key": "gpu", "operator": "Exists"}]},
    }
    raw.update(overrides)
    return parse_model_spec(raw)


def by_kind(objs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_the_runtime_waits_out_endpoint_propagation_then_drains_within_the_grace_period() -> None:
    pod = build_deployment(OWNER, spec(), DEFAULTS)["spec"]["template"]["spec"]
    (runtime,) = pod["containers"]
    sleep = runtime["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = int(env_of(runtime)["SAIGON_DRAIN_TIMEOUT"])
    assert sleep == PRESTOP_SLEEP_S and sleep >= 10  # router DNS: 5 s TTL + 5 s hold
    assert sleep + drain + STOP_MARGIN_S <= pod["terminationGracePeriodSeconds"] == 60
    # A short grace period still fits: the sleep gives way first, then the drain.
    for grace in (0, 4, 15, 30, 300):
        short = build_deployment(OWNER, spec(terminationGracePeriodSeconds=grace), DEFAULTS)["spec"]["template"]
        (runtime,) = short["spec"]["containers"]
        sleep = runtime.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        drain = int(env_of(runtime)["SAIGON_DRAIN_TIMEOUT"])
        assert drain >= 1 and sleep <= grace // 2
        assert sleep + drain <= max(grace, 1), grace
        if grace >= 4 * STOP_MARGIN_S:
            assert sleep + drain + STOP_MARGIN_S == grace


def test_every_child_is_owned_labelled_and_namespaced() -> None:
    children = build_children(OWNER, spec(), DEFAULTS)
    kinds = by_kind(children)
    assert sorted(kinds) == ["Deployment", "PodDisruptionBudget", "Role", "RoleBinding", "Service", "ServiceAccount"]
    assert len(kinds["Service"]) == 2
    for child in children:
        meta = child["metadata"]
        assert meta["namespace"] == "ml"
        assert meta["labels"][r.MODEL_LABEL] == "llama"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "saigon.ai/v1alpha1",
                "kind": "SaigonModel",
                "name": "llama",
                "uid": "1234",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_pod_runs_the_agent_as_a_native_sidecar_before_the_runtime() -> None:
    pod = build_deployment(OWNER, spec(), DEFAULTS)["spec"]["template"]["spec"]
    (agent,) = pod["initContainers"]
    (runtime,) = pod["containers"]
    assert agent["restartPolicy"] == "Always" and agent["image"] == "saigon/operator:1"
    assert pod["readinessGates"] == [{"conditionType": r.READINESS_GATE}]
    assert runtime["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert runtime["resources"]["limits"]["nvidia.com/gpu"] == 1
    runtime_env = env_of(runtime)
    assert runtime_env["SAIGON_BASE_MODEL"] == "/models/base/llama-8b"
    assert runtime_env["SAIGON_DEVICE"] == "cuda"  # a GPU pod never serves from the CPU by surprise
    assert "SAIGON_CACHE_SIZE" not in runtime_env  # the runtime sizes its slots from its memory budget
    assert runtime_env["SAIGON_ADMIN_TOKEN"] == {"secretKeyRef": {"name": "tokens", "key": "admin-token"}}
    agent_env = env_of(agent)
    assert agent_env[AGENT_ENV.RUNTIME_URL] == "http://127.0.0.1:8001"
    assert agent_env[AGENT_ENV.POD_NAME] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert agent_env[AGENT_ENV.ALLOWED_CIDRS] == "10.0.0.0/8"
    # Both see the same adapters directory; only the agent may write it.
    mounts = {c["name"]: {m["name"]: m for m in c["volumeMounts"]} for c in (agent, runtime)}
    assert mounts["runtime"]["adapters"]["readOnly"] is True
    assert "readOnly" not in mounts["agent"]["adapters"]
    assert mounts["agent"]["src-team-adapters"]["mountPath"] == f"{r.SOURCES_MOUNT}/team-adapters"
    # The API token reaches the agent only.
    assert pod["automountServiceAccountToken"] is False
    assert "agent-api-token" in mounts["agent"] and "agent-api-token" not in mounts["runtime"]
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]


def test_spec_changes_roll_the_pods_and_nothing_else_does() -> None:
    def hash_of(s):  # type: ignore[no-untyped-def]
        return build_deployment(OWNER, s, DEFAULTS)["spec"]["template"]["metadata"]["annotations"][
            r.SPEC_HASH_ANNOTATION
        ]

    base = hash_of(spec())
    assert hash_of(spec()) == base
    assert hash_of(spec(replicas=5)) == base  # scaling is not a roll
    assert hash_of(spec(image="saigon/runtime:2")) != base
    assert hash_of(spec(cache={"maxLoras": 16})) != base
    assert (
        build_deployment(OWNER, spec(), Defaults(agent_image="saigon/operator:2"))["spec"]["template"]["metadata"][
            "annotations"
        ][r.SPEC_HASH_ANNOTATION]
        != base
    )


def test_gpu_rolls_need_no_spare_gpu_and_cpu_rolls_never_drop_below_the_replicas() -> None:
    deployment = build_deployment(OWNER, spec(), DEFAULTS)  # gpus: 1
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert deployment["spec"]["replicas"] == 3
    cpu = build_deployment(OWNER, spec(gpus=0), DEFAULTS)
    assert cpu["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    given = build_deployment(OWNER, spec(rollout={"maxSurge": "25%", "maxUnavailable": 0}), DEFAULTS)
    assert given["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 0}
    # One side given as 0: the other keeps the roll moving.
    assert build_deployment(OWNER, spec(gpus=0, rollout={"maxSurge": 0}), DEFAULTS)["spec"]["strategy"][
        "rollingUpdate"
    ] == {"maxSurge": 0, "maxUnavailable": 1}


def test_agent_role_has_exact_verbs_and_no_wildcards() -> None:
    rules = build_role(OWNER)["rules"]
    assert rules == [
        {"apiGroups": ["saigon.ai"], "resources": ["saigonadapters"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]},
    ]
    with_secrets = build_role(OWNER, secret_names=("s3-b", "s3-a"))["rules"][-1]
    assert with_secrets == {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["s3-a", "s3-b"],
        "verbs": ["get"],
    }
    for rule in build_role(OWNER, secret_names=("x",))["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]


def test_the_network_policy_admits_the_runtime_port_from_the_namespace_by_default() -> None:
    from saigon_operator.builders.network import build_network_policy

    policy = build_network_policy(OWNER, spec())
    assert policy["metadata"]["name"] == "llama-runtime"
    assert policy["metadata"]["ownerReferences"] == [OWNER.reference()]
    assert policy["spec"]["podSelector"] == {"matchLabels": {r.MODEL_LABEL: "llama", r.COMPONENT_LABEL: "runtime"}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    # One rule: the runtime port from the model's namespace; no rule opens the agent port (node traffic,
    # the kubelet's probes, is always admitted).
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 8001}]}]


def test_the_network_policy_admits_the_router_and_the_listed_peers_only() -> None:
    from saigon_operator.builders.network import build_network_policy
    from saigon_operator.builders.router import router_selector

    gateway = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}},
               "podSelector": {"matchLabels": {"app": "epp"}}}  # fmt: skip
    nodes = {"ipBlock": {"cidr": "10.0.0.0/16"}}
    options = {"runtimeFrom": [gateway], "agentFrom": [nodes]}
    policy = build_network_policy(OWNER, spec(router={"enabled": True}, port=9000, networkPolicy=options))
    runtime_rule, agent_rule = policy["spec"]["ingress"]
    assert runtime_rule["ports"] == [{"protocol": "TCP", "port": 9000}]
    assert runtime_rule["from"][0] == {"podSelector": {"matchLabels": router_selector("llama")}}
    assert runtime_rule["from"][1]["namespaceSelector"] == gateway["namespaceSelector"]
    assert runtime_rule["from"][1]["podSelector"]["matchLabels"] == {"app": "epp"}
    assert {"podSelector": {}} not in runtime_rule["from"]
    assert agent_rule["ports"] == [{"protocol": "TCP", "port": r.AGENT_HEALTH_PORT}]
    assert agent_rule["from"][0]["ipBlock"]["cidr"] == "10.0.0.0/16"


def test_a_network_peer_needs_exactly_one_kind() -> None:
    import pytest
    from saigon_contract.specs import SpecError

    for bad in ({}, {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}, {"ipBlock": {"cidr": "nope"}}):
        with pytest.raises(SpecError, match="runtimeFrom"):
            spec(networkPolicy={"runtimeFrom": [bad]})


def test_the_operators_log_format_reaches_the_runtime_and_the_agent() -> None:
    for fmt in ("text", "json"):
        pod = build_deployment(OWNER, spec(), Defaults(agent_image="saigon/operator:1", log_format=fmt))["spec"]
        template = pod["template"]["spec"]
        for container in [*template["containers"], *template["initContainers"]]:
            assert env_of(container)["SAIGON_LOG_FORMAT"] == fmt, container["name"]
