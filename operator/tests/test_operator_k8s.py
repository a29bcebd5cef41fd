"""The operator process against a real API server, without runtime pods: leadership, children,
rolling on spec change, spec errors, and the agent's RBAC."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controlplane.cluster import Cluster, CommandError
from controlplane.waiting import eventually
from saigon_e2e.operator_proc import OperatorProcess

SHA = "e" * 64


@pytest.fixture
def operator(k8s_cluster: Cluster, ns: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(k8s_cluster, ns, tmp_path, lease_duration=3).start()
    try:
        op.wait_leading()
        yield op
    finally:
        op.stop()


def apply(cluster: Cluster, ns: str, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=json.dumps(obj))


def get(cluster: Cluster, ns: str, *what: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(cluster.kubectl("get", *what, "-n", ns, "-o", "json"))
    return result


def model(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "baseModel": {"path": "/models/m"},
        "image": "saigon/runtime:1",
        "tokenSecretRef": {"name": "tokens"},
    }
    body.update(spec)
    return {"apiVersion": "saigon.ai/v1alpha1", "kind": "SaigonModel", "metadata": {"name": "m"}, "spec": body}


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def test_one_leader_at_a_time_and_a_quick_handover(k8s_cluster: Cluster, ns: str, tmp_path: Path) -> None:
    first = OperatorProcess(k8s_cluster, ns, tmp_path / "a", lease_duration=3)
    second = OperatorProcess(k8s_cluster, ns, tmp_path / "b", lease_duration=3)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first.start()
    try:
        first.wait_leading()
        second.start()
        eventually(second.healthy, timeout=60, what="standby answers /healthz")
        time.sleep(2)
        assert (first.metric("saigon_operator_leader"), second.metric("saigon_operator_leader")) == (1.0, 0.0)
        apply(k8s_cluster, ns, model())
        eventually(lambda: get(k8s_cluster, ns, "deployment", "m"), timeout=30, what="leader reconciles")
        started = time.monotonic()
        assert first.stop() == 0  # SIGTERM: releases the lease
        second.wait_leading(timeout=30)
        handover = time.monotonic() - started
        print(f"\n[measure] leader handover after SIGTERM: {handover:.2f}s")
        assert handover < 10
        lease = get(k8s_cluster, ns, "lease", "saigon-operator")
        assert lease["spec"]["leaseTransitions"] >= 1
        eventually(  # the new leader resumes the existing model
            lambda: second.metric("saigon_operator_reconciles_total", kind="SaigonModel") >= 1,
            timeout=30,
            what="resume",
        )
    finally:
        first.stop()
        second.stop()


def test_spec_changes_roll_the_deployment(k8s_cluster: Cluster, ns: str, operator: OperatorProcess) -> None:
    apply(k8s_cluster, ns, model(replicas=2))

    def template_hash() -> str:
        deployment = get(k8s_cluster, ns, "deployment", "m")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["saigon.ai/spec-hash"])

    first = eventually(template_hash, timeout=30, what="deployment")
    apply(k8s_cluster, ns, model(replicas=3))
    eventually(lambda: get(k8s_cluster, ns, "deployment", "m")["spec"]["replicas"] == 3, timeout=30, what="scaled")
    assert template_hash() == first
    apply(k8s_cluster, ns, model(replicas=3, image="saigon/runtime:2"))
    second = eventually(lambda: (h := template_hash()) != first and h, timeout=30, what="rolled")
    status = eventually(
        lambda: (s := get(k8s_cluster, ns, "saigonmodel", "m")["status"]).get("specHash") == second and s,
        timeout=30,
        what="status follows",
    )
    assert status["observedGeneration"] == 3 and status["replicas"] == 0
    assert condition({"status": status}, "Ready")["reason"] == "ReplicasNotReady"
    assert operator.metric("saigon_operator_reconcile_duration_seconds_count", kind="SaigonModel") >= 3


def test_the_router_comes_and_goes_with_the_spec(k8s_cluster: Cluster, ns: str, operator: OperatorProcess) -> None:
    apply(k8s_cluster, ns, model(replicas=2, router={"enabled": True, "replicas": 1}))
    config = eventually(lambda: get(k8s_cluster, ns, "configmap", "m-router"), timeout=30, what="router config")
    # Placement (the default): the pods the operator sees are the servers (none runs here), and the
    # owners' map sits beside the configuration.
    assert "map_int(/usr/local/etc/haproxy/owners.map)" in config["data"]["haproxy.cfg"]
    assert "server-template" not in config["data"]["haproxy.cfg"] and config["data"]["owners.map"] == ""
    # Without placement, servers come from the headless Service through DNS.
    apply(k8s_cluster, ns, model(replicas=2, router={"enabled": True, "replicas": 1}, placement={"replicas": 0}))
    config = eventually(
        lambda: (c := get(k8s_cluster, ns, "configmap", "m-router")) and "owners.map" not in c["data"] and c,
        timeout=30,
        what="router config without placement",
    )
    assert f"server-template rt 8 m-pods.{ns}.svc.cluster.local:8001" in config["data"]["haproxy.cfg"]
    router = get(k8s_cluster, ns, "deployment", "m-router")
    assert router["spec"]["replicas"] == 1
    assert router["metadata"]["ownerReferences"][0]["kind"] == "SaigonModel"
    assert get(k8s_cluster, ns, "service", "m-router")["spec"]["selector"]["saigon.ai/router"] == "m"
    headless = get(k8s_cluster, ns, "service", "m-pods")["spec"]
    assert headless["clusterIP"] == "None" and headless.get("publishNotReadyAddresses", False) is False
    # The schema refuses a balance factor that would bound nothing.
    with pytest.raises(CommandError, match="hashBalanceFactor"):
        apply(k8s_cluster, ns, model(replicas=2, router={"enabled": True, "hashBalanceFactor": 50}))
    apply(k8s_cluster, ns, model(replicas=2, router={"enabled": False}))

    def gone() -> bool:
        for kind in ("deployment", "service", "configmap"):
            try:
                get(k8s_cluster, ns, kind, "m-router")
                return False
            except CommandError:
                continue
        return True

    eventually(gone, timeout=30, what="router removed")
    assert get(k8s_cluster, ns, "deployment", "m")["spec"]["replicas"] == 2


def test_each_model_gets_a_network_policy_it_owns(k8s_cluster: Cluster, ns: str, operator: OperatorProcess) -> None:
    gateway = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gw"}}}
    apply(k8s_cluster, ns, model(networkPolicy={"runtimeFrom": [gateway]}))
    policy = eventually(lambda: get(k8s_cluster, ns, "networkpolicy", "m-runtime"), timeout=30, what="policy")
    uid = get(k8s_cluster, ns, "saigonmodel", "m")["metadata"]["uid"]
    assert [o["uid"] for o in policy["metadata"]["ownerReferences"]] == [uid]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [gateway] and rule["ports"] == [{"protocol": "TCP", "port": 8001}]
    # A peer the API server's schema refuses never reaches the operator.
    with pytest.raises(CommandError, match="a peer needs podSelector and/or namespaceSelector, or ipBlock"):
        apply(k8s_cluster, ns, model(networkPolicy={"runtimeFrom": [{}]}))
    apply(k8s_cluster, ns, model(networkPolicy={"enabled": False}))

    def gone() -> bool:
        try:
            get(k8s_cluster, ns, "networkpolicy", "m-runtime")
            return False
        except CommandError:
            return True

    eventually(gone, timeout=30, what="policy removed when disabled")


def test_a_spec_the_schema_admits_but_the_operator_refuses(
    k8s_cluster: Cluster, ns: str, operator: OperatorProcess
) -> None:
    apply(k8s_cluster, ns, model(adapterSources={"allowedCidrs": ["not-a-network"]}))
    obj = eventually(
        lambda: (
            (o := get(k8s_cluster, ns, "saigonmodel", "m"))
            and condition(o, "Ready").get("reason") == "InvalidSpec"
            and o
        ),
        timeout=30,
        what="Ready=False InvalidSpec",
    )
    assert "allowedCidrs" in condition(obj, "Ready")["message"]
    with pytest.raises(CommandError):
        k8s_cluster.kubectl("get", "deployment", "m", "-n", ns)
    time.sleep(2)
    assert operator.metric("saigon_operator_reconciles_total", kind="SaigonModel", outcome="invalid") == 1.0


def test_adapter_without_pods_has_a_target_and_says_why_it_is_not_ready(
    k8s_cluster: Cluster, ns: str, operator: OperatorProcess
) -> None:
    apply(k8s_cluster, ns, model(replicas=0))
    adapter = {
        "apiVersion": "saigon.ai/v1alpha1",
        "kind": "SaigonAdapter",
        "metadata": {"name": "a"},
        "spec": {
            "modelRef": {"name": "m"},
            "scope": {"global": True},
            "version": "v1",
            "sha256": SHA,
            "source": {"https": {"url": "https://adapters.example.com/g.tar"}},
        },
    }
    apply(k8s_cluster, ns, adapter)
    obj = eventually(
        lambda: (o := get(k8s_cluster, ns, "saigonadapter", "a")).get("status", {}).get("target") and o,
        timeout=30,
        what="target published",
    )
    assert obj["status"]["target"] == {
        "version": "v1",
        "sha256": SHA,
        "source": {"https": {"url": "https://adapters.example.com/g.tar"}},
    }
    assert obj["status"]["adapterName"] == "global" and obj["status"]["phase"] == "Pending"
    assert condition(obj, "Ready")["reason"] == "NoReplicas"
    assert obj["metadata"]["finalizers"] == ["saigon.ai/finalizer"]
    k8s_cluster.kubectl("delete", "saigonadapter", "a", "-n", ns, "--timeout=30s")  # no pods: nothing to wait for


def agent_may(cluster: Cluster, namespace: str, *request: str) -> bool:
    """`kubectl auth can-i` as the agents of SaigonModel m."""
    agent = cluster.kubeconfig_for_service_account(namespace, "m-agent")
    try:
        cluster.kubectl("auth", "can-i", *request, "-n", namespace, kubeconfig_path=agent)
        return True
    except CommandError:
        return False


def s3_adapter(name: str, user: str, secret: str, endpoint: str) -> dict[str, Any]:
    s3 = {"endpoint": endpoint, "bucket": "lora", "key": f"{user}.tar", "credentialsSecretRef": {"name": secret}}
    return {
        "apiVersion": "saigon.ai/v1alpha1",
        "kind": "SaigonAdapter",
        "metadata": {"name": name},
        "spec": {"modelRef": {"name": "m"}, "scope": {"user": user}, "version": "v1", "sha256": SHA,
                 "source": {"s3": s3}},
    }  # fmt: skip


def test_s3_credentials_and_endpoints_come_from_the_models_allow_lists(
    k8s_cluster: Cluster, ns: str, operator: OperatorProcess
) -> None:
    for secret in ("team-s3", "billing-db"):
        k8s_cluster.kubectl("create", "secret", "generic", secret, "-n", ns, "--from-literal=accessKeyId=k",
                            "--from-literal=secretAccessKey=s")  # fmt: skip
    allowed = {"allowedSecrets": ["team-s3"], "allowedEndpoints": ["https://s3.team.example"]}
    apply(k8s_cluster, ns, model(replicas=0, adapterSources={"s3": allowed}))
    eventually(lambda: get(k8s_cluster, ns, "rolebinding", "m-agent"), timeout=30, what="rbac")
    # An adapter author picks another Secret of the namespace, or sends the model's credentials elsewhere.
    apply(k8s_cluster, ns, s3_adapter("steal", "1", "billing-db", "https://s3.team.example"))
    apply(k8s_cluster, ns, s3_adapter("exfil", "2", "team-s3", "https://s3.attacker.example"))
    apply(k8s_cluster, ns, s3_adapter("good", "3", "team-s3", "https://s3.team.example:443/"))

    def refused(name: str) -> dict[str, Any] | None:
        obj = get(k8s_cluster, ns, "saigonadapter", name)
        return obj if condition(obj, "Ready").get("reason") == "SourceNotAllowed" else None

    steal = eventually(lambda: refused("steal"), timeout=30, what="the foreign Secret is refused")
    assert (
        "billing-db is not in the SaigonModel's spec.adapterSources.s3.allowedSecrets"
        in condition(steal, "Ready")["message"]
    )
    assert "target" not in steal["status"] and steal["status"]["phase"] == "Invalid"
    exfil = eventually(lambda: refused("exfil"), timeout=30, what="the foreign endpoint is refused")
    assert "https://s3.attacker.example is not in" in condition(exfil, "Ready")["message"]
    eventually(
        lambda: (get(k8s_cluster, ns, "saigonadapter", "good").get("status") or {}).get("target"),
        timeout=30,
        what="the allowed source is published",
    )

    def agent_can_read(secret: str) -> bool:
        return agent_may(k8s_cluster, ns, "get", f"secret/{secret}")

    eventually(lambda: agent_can_read("team-s3"), timeout=30, what="the agents may read the allowed Secret")
    assert not agent_can_read("billing-db")
    # Taking the Secret off the list takes it away from the agents and refuses the adapter.
    apply(k8s_cluster, ns, model(replicas=0, adapterSources={"s3": {**allowed, "allowedSecrets": ["other"]}}))
    eventually(lambda: refused("good"), timeout=30, what="the adapter is refused once its Secret is not allowed")
    eventually(lambda: not agent_can_read("team-s3"), timeout=30, what="the grant is withdrawn")


def test_hugging_face_tokens_and_web_identity_come_from_the_models_allow_lists(
    k8s_cluster: Cluster, ns: str, operator: OperatorProcess
) -> None:
    for secret in ("hf-team", "hf-other"):
        k8s_cluster.kubectl("create", "secret", "generic", secret, "-n", ns, "--from-literal=token=hf_x")
    sources = {
        "huggingFace": {"allowedTokenSecrets": ["hf-team"]},
        "s3": {"allowedEndpoints": ["https://s3.team.example"]},
    }
    apply(k8s_cluster, ns, model(replicas=0, adapterSources=sources))
    eventually(lambda: get(k8s_cluster, ns, "rolebinding", "m-agent"), timeout=30, what="rbac")

    def hf_adapter(name: str, user: str, secret: str) -> dict[str, Any]:
        hf = {"repo": "org/lora", "revision": "a" * 40, "tokenSecretRef": {"name": secret}}
        return {"apiVersion": "saigon.ai/v1alpha1", "kind": "SaigonAdapter", "metadata": {"name": name},
                "spec": {"modelRef": {"name": "m"}, "scope": {"user": user}, "version": "v1", "sha256": SHA,
                         "source": {"huggingFace": hf}}}  # fmt: skip

    apply(k8s_cluster, ns, hf_adapter("hf-good", "5", "hf-team"))
    apply(k8s_cluster, ns, hf_adapter("hf-steal", "6", "hf-other"))
    web = s3_adapter("webid", "7", "unused", "https://s3.team.example")
    del web["spec"]["source"]["s3"]["credentialsSecretRef"]
    apply(k8s_cluster, ns, web)

    def reason(name: str) -> str | None:
        return condition(get(k8s_cluster, ns, "saigonadapter", name), "Ready").get("reason")

    eventually(lambda: reason("hf-steal") == "SourceNotAllowed", timeout=30, what="the foreign token is refused")
    message = condition(get(k8s_cluster, ns, "saigonadapter", "hf-steal"), "Ready")["message"]
    assert "hf-other is not in the SaigonModel's spec.adapterSources.huggingFace.allowedTokenSecrets" in message
    eventually(lambda: reason("webid") == "SourceNotAllowed", timeout=30, what="web identity needs the model's yes")
    assert "allowWebIdentity is false" in condition(get(k8s_cluster, ns, "saigonadapter", "webid"), "Ready")["message"]
    eventually(
        lambda: (get(k8s_cluster, ns, "saigonadapter", "hf-good").get("status") or {}).get("target"),
        timeout=30,
        what="the allowed token's adapter is published",
    )

    def agent_can_read(secret: str) -> bool:
        return agent_may(k8s_cluster, ns, "get", f"secret/{secret}")

    eventually(lambda: agent_can_read("hf-team"), timeout=30, what="the agents may read the allowed token")
    assert not agent_can_read("hf-other")
    # The model allows web identity: the adapter without a Secret is judged again and published.
    sources["s3"]["allowWebIdentity"] = True  # type: ignore[index]
    apply(k8s_cluster, ns, model(replicas=0, adapterSources=sources))
    eventually(
        lambda: (get(k8s_cluster, ns, "saigonadapter", "webid").get("status") or {}).get("target"),
        timeout=30,
        what="the web identity adapter is published once allowed",
    )


def test_the_agent_role_is_enough_and_no_more(k8s_cluster: Cluster, ns: str, operator: OperatorProcess) -> None:
    apply(k8s_cluster, ns, model())
    eventually(lambda: get(k8s_cluster, ns, "rolebinding", "m-agent"), timeout=30, what="rbac")
    agent = k8s_cluster.kubeconfig_for_service_account(ns, "m-agent")

    def can(*args: str) -> bool:
        try:
            k8s_cluster.kubectl("auth", "can-i", *args, "-n", ns, kubeconfig_path=agent)
            return True
        except CommandError:
            return False

    assert can("watch", "saigonadapters.saigon.ai")
    assert can("patch", "pods")
    assert can("patch", "pods", "--subresource=status")
    for denied in (
        ("update", "saigonadapters.saigon.ai"),
        ("patch", "saigonadapters.saigon.ai", "--subresource=status"),
        ("delete", "pods"),
        ("create", "pods"),
        ("get", "secrets"),
        ("list", "saigonmodels.saigon.ai"),
    ):
        assert not can(*denied), denied


# Everything the operator does, and nothing more (the Helm chart's ClusterRole should equal this).
OPERATOR_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["saigon.ai"],
        "resources": ["saigonmodels", "saigonadapters"],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {"apiGroups": ["saigon.ai"], "resources": ["saigonmodels/status", "saigonadapters/status"], "verbs": ["patch"]},
    {"apiGroups": ["saigon.ai"], "resources": ["saigonmodels/finalizers"], "verbs": ["update"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # get: the S3 credentials the agent Role grants; create/patch: each model's inference tokens and audit salt.
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": [""], "resources": ["services", "configmaps"], "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["get", "create", "patch"]},
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["networkpolicies"],
        "verbs": ["get", "create", "patch", "delete"],
    },
    {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["roles", "rolebindings"],
        "verbs": ["get", "create", "patch"],
    },
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
    # kopf checks which namespaces exist (even when given explicit ones) and watches CRDs to
    # notice resources appear; both read-only.
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list", "watch"]},
]


def test_the_operator_needs_no_more_than_its_rules(k8s_cluster: Cluster, ns: str, tmp_path: Path) -> None:
    for rule in OPERATOR_RULES:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
    role = f"saigon-operator-{ns}"
    docs = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "saigon-operator", "namespace": ns}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role},
            "rules": OPERATOR_RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "saigon-operator", "namespace": ns}],
        },
    ]
    k8s_cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))
    op = OperatorProcess(k8s_cluster, ns, tmp_path, lease_duration=3)
    op.kubeconfig = k8s_cluster.kubeconfig_for_service_account(ns, "saigon-operator")
    op.start()
    try:
        op.wait_leading()
        apply(k8s_cluster, ns, model(replicas=1))
        eventually(
            lambda: get(k8s_cluster, ns, "rolebinding", "m-agent"), timeout=60, what="children with restricted RBAC"
        )
        eventually(
            lambda: (get(k8s_cluster, ns, "saigonmodel", "m").get("status") or {}).get("selector"),
            timeout=30,
            what="status",
        )
        adapter = {
            "apiVersion": "saigon.ai/v1alpha1",
            "kind": "SaigonAdapter",
            "metadata": {"name": "a"},
            "spec": {"modelRef": {"name": "m"}, "scope": {"user": "1"}, "version": "v1", "sha256": SHA,
                     "source": {"https": {"url": "https://adapters.example.com/1.tar"}}},
        }  # fmt: skip
        apply(k8s_cluster, ns, adapter)
        eventually(
            lambda: (get(k8s_cluster, ns, "saigonadapter", "a").get("status") or {}).get("target"),
            timeout=30,
            what="target",
        )
        k8s_cluster.kubectl("delete", "saigonadapter", "a", "-n", ns, "--timeout=30s")
        log = op.log()
        # A bare status code, so that a host name such as vm-17403 in the leader identity is not taken for one.
        refused = re.search(r"forbidden|(?<![\w.-])403(?![\w.-])", log, re.IGNORECASE)
        assert refused is None, log[-3000:]
    finally:
        op.stop()
        k8s_cluster.kubectl("delete", "clusterrolebinding,clusterrole", role, "--ignore-not-found")
