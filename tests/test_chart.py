"""The Helm chart with the real helm, kubectl, promtool and kube-apiserver.

Offline: lint, schema, rendering, CRD copies, alert rules under promtool. Against the test
control plane: a server-side dry run of everything the chart renders, install / upgrade /
uninstall, the example objects, and the operator's RBAC through the API server's own
authorizer (SubjectAccessReview). tests/test_dashboards.py runs the real operator under
this RBAC and every alert and panel query against a real Prometheus.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from controlplane.cluster import Cluster, CommandError
from saigon_chart import (
    ALL_ON,
    CHART,
    DASHBOARDS,
    REPO,
    alerts,
    documents,
    install_monitoring_crds,
    only,
    rule_groups,
    run_helm,
    template,
    write_values,
)

REQUIRED_ALERTS = {
    "SaigonAdapterLoadFailures",
    "SaigonRolloutStuck",
    "SaigonRolloutRejected",
    "SaigonOperatorNotLeading",
    "SaigonAdapterCacheThrash",
    "SaigonLatencyP99High",
    "SaigonRuntimeNotReady",
    "SaigonPromotionRolledBack",
    "SaigonAdapterDownloadFailures",
}

# What the operator creates for each SaigonModel (saigon_operator.builders.model.build_children).
CHILDREN = [
    ("", "serviceaccounts"),
    ("", "services"),
    ("apps", "deployments"),
    ("policy", "poddisruptionbudgets"),
    ("rbac.authorization.k8s.io", "roles"),
    ("rbac.authorization.k8s.io", "rolebindings"),
]
# Every API call the operator makes (operator/saigon_operator and kopf as it is configured in
# saigon_operator.main), as (verb, group, resource). The agent's calls are granted by the Role
# the operator creates per SaigonModel, which the operator must itself hold to create it.
OPERATOR_CALLS = [
    # kopf: watch both kinds and runtime pods; finalizers and progress annotations by patch.
    ("get", "saigon.ai", "saigonmodels"),  # handlers.credentials: the model an adapter's tokens belong to
    ("list", "saigon.ai", "saigonmodels"),
    ("watch", "saigon.ai", "saigonmodels"),
    ("patch", "saigon.ai", "saigonmodels"),
    ("list", "saigon.ai", "saigonadapters"),
    ("watch", "saigon.ai", "saigonadapters"),
    ("patch", "saigon.ai", "saigonadapters"),  # also handlers.adapter.requeue
    ("list", "", "pods"),
    ("watch", "", "pods"),
    # aggregator: the one status writer.
    ("patch", "saigon.ai", "saigonmodels/status"),
    ("patch", "saigon.ai", "saigonadapters/status"),
    ("update", "saigon.ai", "saigonmodels/finalizers"),  # blockOwnerDeletion on children
    # handlers.model.apply: server-side apply of every child.
    *[(verb, group, res) for verb in ("create", "patch") for group, res in CHILDREN],
    # builders.router: the router's ConfigMap, Deployment and Service, deleted when it is off.
    ("create", "", "configmaps"),
    ("patch", "", "configmaps"),
    ("delete", "", "configmaps"),
    ("delete", "", "services"),
    ("delete", "apps", "deployments"),
    # builders.network: one NetworkPolicy per SaigonModel, deleted when spec.networkPolicy is off.
    ("create", "networking.k8s.io", "networkpolicies"),
    ("patch", "networking.k8s.io", "networkpolicies"),
    ("delete", "networking.k8s.io", "networkpolicies"),
    # builders.model.build_role grants the agent these; RBAC allows granting only what one holds.
    ("get", "saigon.ai", "saigonadapters"),
    ("get", "", "pods"),
    ("patch", "", "pods"),
    ("patch", "", "pods/status"),
    ("get", "", "secrets"),
    # handlers.credentials: each model's inference tokens and audit salt.
    ("create", "", "secrets"),
    ("patch", "", "secrets"),
    # events.EventRecorder
    ("create", "", "events"),
]
LEADER_CALLS = [("get", "coordination.k8s.io", "leases"), ("create", "coordination.k8s.io", "leases"),
                ("update", "coordination.k8s.io", "leases")]  # fmt: skip
NOT_GRANTED = [
    ("delete", "policy", "poddisruptionbudgets"),
    ("update", "apps", "deployments"),
    ("create", "", "pods"),
    ("delete", "", "pods"),
    ("list", "", "secrets"),
    ("delete", "", "secrets"),
    ("delete", "saigon.ai", "saigonadapters"),
    ("update", "saigon.ai", "saigonmodels"),
    ("get", "", "configmaps"),
    ("escalate", "rbac.authorization.k8s.io", "roles"),
    ("bind", "rbac.authorization.k8s.io", "roles"),
]


@pytest.fixture(scope="module")
def all_on(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_values(tmp_path_factory.mktemp("values") / "all-on.yaml", ALL_ON)


# --- offline ---------------------------------------------------------------------------------------


def test_chart_crds_are_byte_identical_copies_of_crds() -> None:
    source = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    copies = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert source, "crds/ is empty"
    assert not (CHART / "crds").is_symlink(), "helm does not package a symlinked crds/ reliably"
    stale = sorted(name for name in source.keys() | copies.keys() if source.get(name) != copies.get(name))
    assert not stale, f"charts/saigon/crds differs from crds/ in {stale}: run scripts/sync-chart-crds.sh"


@pytest.mark.parametrize("values", ["defaults", "all-on", "namespaced", "cluster-wide"])
def test_helm_lint_strict(values: str, tmp_path: Path) -> None:
    args = ["lint", "--strict", str(CHART), "--kube-version", "1.36.0"]
    if values == "all-on":
        args += ["--values", str(write_values(tmp_path / "v.yaml", ALL_ON))]
    elif values == "namespaced":
        args += ["--values", str(write_values(tmp_path / "v.yaml", {**ALL_ON, "watchNamespaces": ["a", "b"]}))]
    elif values == "cluster-wide":
        args += ["--values", str(write_values(tmp_path / "v.yaml", {**ALL_ON, "clusterWide": True}))]
    out = run_helm(*args).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"operator": {"replicas": "two"}}, "/operator/replicas"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
        ({"clusterWide": "yes"}, "/clusterWide"),
        ({"adapterFinalizerPolicy": {"enabled": "yes"}}, "/adapterFinalizerPolicy/enabled"),
        ({"prometheusRule": {"rules": {"latencyHigh": {"window": "5 min"}}}}, "/rules/latencyHigh/window"),
        ({"prometheusRule": {"rules": {"cacheThrash": {"maxHitRatio": 2}}}}, "/rules/cacheThrash/maxHitRatio"),
        ({"metrics": {"podMonitor": {"enabeld": True}}}, "enabeld"),
        ({"imageTag": "x"}, "imageTag"),
        ({"operator": {"topologySpreadConstraints": [{"maxSkew": 1}]}}, "/operator/topologySpreadConstraints/0"),
        ({"inferencePools": [{"model": "llama"}]}, "endpointPicker"),
        ({"inferencePools": [{"model": "llama", "endpointPicker": {"name": "e", "failureMode": "x"}}]},
         "/inferencePools/0/endpointPicker/failureMode"),
    ],
)  # fmt: skip
def test_schema_refuses_bad_values_with_the_path(values: dict[str, Any], message: str, tmp_path: Path) -> None:
    result = run_helm(
        "template", "x", str(CHART), "--kube-version", "1.36.0",
        "--values", str(write_values(tmp_path / "bad.yaml", values)), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


def test_cluster_wide_and_listed_namespaces_exclude_each_other(tmp_path: Path) -> None:
    values = write_values(tmp_path / "both.yaml", {"clusterWide": True, "watchNamespaces": ["a"]})
    result = run_helm("template", "x", str(CHART), "--kube-version", "1.36.0", "--values", str(values), check=False)
    assert result.returncode != 0
    assert "clusterWide and watchNamespaces exclude each other" in result.stderr


def test_defaults_render_only_the_operator_and_its_rbac() -> None:
    docs = documents(template(namespace="ops"))
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == [
        "ClusterRole", "ClusterRole", "ClusterRoleBinding",
        "Deployment", "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding",
        "Role", "RoleBinding", "RoleBinding", "Service", "ServiceAccount",
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    ]  # fmt: skip
    # Namespaced by default: the operator's rights are bound in the release namespace alone.
    (operator_binding,) = [b for b in only(docs, "RoleBinding") if b["roleRef"]["kind"] == "ClusterRole"]
    assert operator_binding["metadata"]["namespace"] == "ops"
    assert [b["metadata"]["name"] for b in only(docs, "ClusterRoleBinding")] == ["saigon-operator-discovery"]


def test_every_object_carries_the_standard_labels(all_on: Path) -> None:
    for doc in documents(template(all_on, release="obs")):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "saigon", doc["metadata"]["name"]
        assert labels["app.kubernetes.io/instance"] == "obs"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "saigon"
        assert labels["app.kubernetes.io/version"]


def test_operator_deployment_is_hardened_and_runs_one_active_replica() -> None:
    docs = documents(template(release="s", namespace="ops"))
    (deployment,) = only(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    hardened = container["securityContext"]
    assert hardened["readOnlyRootFilesystem"] is True
    assert hardened["allowPrivilegeEscalation"] is False
    assert hardened["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    # The Lease (one active replica among any number) lives in the release namespace.
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in container["env"]
    assert "--lease-name=s-saigon-operator" in container["args"]
    assert pod["serviceAccountName"] == "s-saigon-operator"
    assert container["args"][0] == "run"
    assert [a for a in container["args"] if a.startswith("--namespace")] == ["--namespace=ops"]


def test_operator_args_are_accepted_by_the_operator_cli(tmp_path: Path) -> None:
    """The chart's args parse with the real `saigon-operator` argument parser."""
    from saigon_operator.cli import build_parser, config_from_args

    values = write_values(tmp_path / "v.yaml", {"watchNamespaces": ["team-a", "team-b"], "operator": {"replicas": 2}})
    (deployment,) = only(documents(template(values, namespace="ops")), "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    config = config_from_args(build_parser().parse_args(args))
    assert config.namespaces == ("team-a", "team-b")
    assert config.agent_image == "ghcr.io/saigon-ai/saigon-operator:0.1.0"
    assert config.http_port == 8080 and config.lease_name == "saigon-operator"


def test_rbac_has_no_wildcards_and_namespaced_mode_binds_only_listed_namespaces(tmp_path: Path) -> None:
    values = write_values(tmp_path / "v.yaml", {"watchNamespaces": ["team-a", "team-b"]})
    docs = documents(template(values, namespace="ops"))
    for role in only(docs, "ClusterRole") + only(docs, "Role"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), (role["metadata"]["name"], rule)
    assert not [b for b in only(docs, "ClusterRoleBinding") if b["roleRef"]["name"] == "saigon-operator"]
    bindings = only(docs, "RoleBinding")
    bound = sorted(b["metadata"]["namespace"] for b in bindings if b["roleRef"]["kind"] == "ClusterRole")
    assert bound == ["team-a", "team-b"]


def test_prometheus_rule_has_the_alerts_and_passes_promtool(all_on: Path, tmp_path: Path) -> None:
    docs = documents(template(all_on))
    found = alerts(docs)
    assert set(found) == REQUIRED_ALERTS
    for name, rule in found.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule_groups(docs)}))
    result = subprocess.run(["promtool", "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(REQUIRED_ALERTS)} rules found" in result.stdout


def test_every_alert_links_its_runbook_section(all_on: Path, tmp_path: Path) -> None:
    sections = {
        line[3:].strip().lower()
        for line in (REPO / "docs" / "runbooks.md").read_text().splitlines()
        if line.startswith("## ")
    }
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    for name, rule in alerts(documents(template(all_on))).items():
        base, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert base == f"https://github.com/saigon-ai/saigon/blob/v{version}/docs/runbooks.md", name
        assert anchor == name.lower() and anchor in sections, name
    elsewhere = {
        **ALL_ON,
        "prometheusRule": {**ALL_ON["prometheusRule"], "runbookBaseUrl": "https://wiki.internal/saigon"},
    }
    moved = alerts(documents(template(write_values(tmp_path / "v.yaml", elsewhere))))
    assert (
        moved["SaigonRuntimeNotReady"]["annotations"]["runbook_url"]
        == "https://wiki.internal/saigon#saigonruntimenotready"
    )


def test_alert_thresholds_come_from_values(tmp_path: Path) -> None:
    values = {**ALL_ON, "prometheusRule": {"enabled": True, "additionalLabels": {"team": "ml"}, "rules": {
        "latencyHigh": {"p99Seconds": 2.5, "window": "3m", "for": "1m"},
        "rolloutStuck": {"enabled": False},
    }}}  # fmt: skip
    found = alerts(documents(template(write_values(tmp_path / "v.yaml", values))))
    assert "SaigonRolloutStuck" not in found
    latency = found["SaigonLatencyP99High"]
    assert "> 2.5" in latency["expr"] and "[3m]" in latency["expr"] and latency["for"] == "1m"
    assert all(rule["labels"]["team"] == "ml" for rule in found.values())


def test_dashboards_ship_as_sidecar_configmaps(all_on: Path) -> None:
    maps = only(documents(template(all_on)), "ConfigMap")
    files = {p.name: json.loads(p.read_text()) for p in DASHBOARDS.glob("*.json")}
    assert set(files) == {"saigon-runtime.json", "saigon-rollouts.json"}
    shipped = {}
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"]["grafana_folder"] == "Saigon"
        shipped.update({k: json.loads(v) for k, v in cm["data"].items()})
    assert shipped == files
    uids = [board["uid"] for board in files.values()]
    assert len(set(uids)) == len(uids)
    titles = {p["title"] for board in files.values() for p in board["panels"]}
    for wanted in (
        "Throughput",
        "Time to first token",
        "Generation latency",
        "Resident adapters",
        "Adapter cache hit rate",
        "Adapter loads and evictions",
        "Adapter versions loaded into pods",
        "Promotions by outcome",
        "Agent downloads by result",
        "Agent sync latency",
    ):
        assert any(t.startswith(wanted) for t in titles), wanted


# --- against the control plane ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def monitoring_crds(k8s_cluster: Cluster) -> Cluster:
    install_monitoring_crds(k8s_cluster)
    return k8s_cluster


@pytest.fixture
def namespaces(k8s_api_client: kubernetes.client.ApiClient) -> Iterator[list[str]]:
    core = kubernetes.client.CoreV1Api(k8s_api_client)
    names = [f"chart-{secrets.token_hex(3)}" for _ in range(3)]
    for name in names:
        core.create_namespace(kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name)))
    yield names
    for name in names:
        core.delete_namespace(name)


def test_rendered_chart_passes_a_server_side_dry_run(
    monitoring_crds: Cluster, namespaces: list[str], tmp_path: Path
) -> None:
    release_ns, watched, _ = namespaces
    for extra in ({}, {"watchNamespaces": [watched]}, {"clusterWide": True}):
        values = write_values(tmp_path / "v.yaml", {**ALL_ON, **extra})
        rendered = template(values, release=f"dry-{secrets.token_hex(2)}", namespace=release_ns, include_crds=True)
        out = monitoring_crds.kubectl(
            "apply", "--server-side", "--dry-run=server", "--field-manager=chart-test", "--validate=strict", "-f", "-",
            input=rendered,
        )  # fmt: skip
        applied = [line for line in out.splitlines() if "serverside-applied (server dry run)" in line]
        assert len(applied) == len(documents(rendered)), out


def test_inference_pools_select_the_runtime_pods_of_their_model(
    k8s_cluster: Cluster, namespaces: list[str], tmp_path: Path
) -> None:
    release_ns, other, _ = namespaces
    pools = [
        {"model": "llama", "endpointPicker": {"name": "llama-epp"}},
        {"model": "qwen", "namespace": other, "name": "qwen-pool", "port": 9001,
         "endpointPicker": {"name": "qwen-epp", "port": 9100, "failureMode": "FailOpen"}},
    ]  # fmt: skip
    values = write_values(tmp_path / "v.yaml", {"inferencePools": pools})
    rendered = template(values, namespace=release_ns)
    found = only(documents(rendered), "InferencePool")
    assert [(p["metadata"]["name"], p["metadata"]["namespace"]) for p in found] == [
        ("llama", release_ns),
        ("qwen-pool", other),
    ]
    llama = found[0]["spec"]
    # The same labels the operator puts on runtime pods (and only runtime pods: not the router's).
    from saigon_operator.builders.model import selector_labels

    assert llama["selector"]["matchLabels"] == selector_labels("llama")
    assert llama["targetPorts"] == [{"number": 8001}]
    assert llama["endpointPickerRef"] == {"kind": "Service", "name": "llama-epp", "port": {"number": 9002},
                                          "failureMode": "FailClose"}  # fmt: skip
    k8s_cluster.kubectl("apply", "--server-side", "-f", str(Path(__file__).parent / "saigon_chart" /
                                                             "inferencepool-crd.yaml"))  # fmt: skip
    k8s_cluster.kubectl("wait", "--for=condition=Established", "crd/inferencepools.inference.networking.k8s.io",
                        "--timeout=60s")  # fmt: skip
    out = k8s_cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-",
        input="\n---\n".join(json.dumps(p) for p in found),
    )  # fmt: skip
    assert out.count("serverside-applied (server dry run)") == 2, out


def test_examples_are_valid_objects(monitoring_crds: Cluster, namespaces: list[str]) -> None:
    namespace = namespaces[0]
    monitoring_crds.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    for name in ("saigonmodels.saigon.ai", "saigonadapters.saigon.ai"):
        monitoring_crds.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    out = monitoring_crds.kubectl(
        "apply", "--server-side", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", str(REPO / "examples")
    )
    assert out.count("serverside-applied (server dry run)") == 5, out


def test_install_upgrade_uninstall_and_the_operators_rbac(
    monitoring_crds: Cluster, k8s_api_client: kubernetes.client.ApiClient, namespaces: list[str], tmp_path: Path
) -> None:
    release_ns, team_a, team_b = namespaces
    release = f"sg-{secrets.token_hex(2)}"
    operator = f"{release}-saigon-operator"
    installed = run_helm("install", release, str(CHART), "-n", release_ns, "--values",
                         str(write_values(tmp_path / "v1.yaml", {**ALL_ON, "clusterWide": True})),
                         cluster=monitoring_crds)  # fmt: skip
    try:
        # NOTES.txt: how to check the install and apply the examples, and what was switched on.
        assert f"kubectl -n {release_ns} rollout status deployment/{operator}" in installed.stdout
        quickstart = "https://github.com/saigon-ai/saigon/releases/download/v0.1.0/quickstart.yaml"
        assert f"kubectl -n saigon-demo apply -f {quickstart}" in installed.stdout
        assert "PrometheusRule" in installed.stdout and "Saigon / Runtime" in installed.stdout
        kinds = "deployment,service,serviceaccount,role,rolebinding,servicemonitor,podmonitor,prometheusrule,configmap"
        selector = f"app.kubernetes.io/instance={release}"
        listed = monitoring_crds.kubectl("get", kinds, "-n", release_ns, "-l", selector, "-o", "json")
        objects = json.loads(listed)["items"]
        assert sorted(o["kind"] for o in objects) == [
            "ConfigMap", "ConfigMap", "Deployment", "PodMonitor", "PodMonitor", "PrometheusRule", "Role", "RoleBinding",
            "Service", "ServiceAccount", "ServiceMonitor",
        ]  # fmt: skip
        monitoring_crds.kubectl("get", "clusterrolebinding", operator)
        for crd in ("saigonmodels.saigon.ai", "saigonadapters.saigon.ai"):
            monitoring_crds.kubectl("get", "crd", crd)
        # Cluster-wide: every call granted in any namespace, the Lease only in the release's.
        _check_rbac(k8s_api_client, release_ns, operator, [team_a], team_b, cluster_wide=True)

        # Upgrade to two watched namespaces: RoleBindings there, the ClusterRoleBinding gone.
        run_helm("upgrade", release, str(CHART), "-n", release_ns, "--values",
                 str(write_values(tmp_path / "v2.yaml", {**ALL_ON, "watchNamespaces": [team_a, team_b],
                                                         "operator": {"replicas": 2}})),
                 cluster=monitoring_crds)  # fmt: skip
        for namespace in (team_a, team_b):
            monitoring_crds.kubectl("get", "rolebinding", operator, "-n", namespace)
        gone = monitoring_crds.kubectl("get", "clusterrolebinding", operator, "--ignore-not-found")
        assert gone.strip() == ""
        deployment = json.loads(monitoring_crds.kubectl("get", "deployment", operator, "-n", release_ns, "-o", "json"))
        assert deployment["spec"]["replicas"] == 2
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--namespace={team_a}" in args and f"--namespace={team_b}" in args
        # Namespaced: the same calls in the watched namespaces and none elsewhere.
        _check_rbac(k8s_api_client, release_ns, operator, [team_a, team_b], release_ns, cluster_wide=False)
        history = run_helm("history", release, "-n", release_ns, "-o", "json", cluster=monitoring_crds).stdout
        assert [h["revision"] for h in json.loads(history)] == [1, 2]
    finally:
        run_helm("uninstall", release, "-n", release_ns, "--wait", "--timeout", "60s", cluster=monitoring_crds)
    left = monitoring_crds.kubectl(
        "get", "deployment,service,serviceaccount,role,rolebinding,configmap,prometheusrule", "-n", release_ns,
        "-l", f"app.kubernetes.io/instance={release}", "-o", "name",
    )  # fmt: skip
    assert left.strip() == ""
    for kind in ("clusterrole", "clusterrolebinding"):
        assert monitoring_crds.kubectl("get", kind, "-l", f"app.kubernetes.io/instance={release}", "-o", "name") == ""
    # Helm never deletes CRDs: SaigonModels and SaigonAdapters outlive the release.
    monitoring_crds.kubectl("get", "crd", "saigonadapters.saigon.ai")


RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


def test_default_install_is_namespaced_and_cluster_wide_is_a_choice(
    k8s_cluster: Cluster, namespaces: list[str], tmp_path: Path
) -> None:
    """`kubectl auth can-i --as` the chart's operator ServiceAccount, on the real authorizer."""
    release_ns, team, _ = namespaces
    release = f"ci-{secrets.token_hex(2)}"
    user = f"system:serviceaccount:{release_ns}:{release}-saigon-operator"

    def install(values: dict[str, Any]) -> str:
        rendered = template(write_values(tmp_path / "v.yaml", values), release=release, namespace=release_ns)
        docs = [d for d in documents(rendered) if d["kind"] in RBAC_KINDS]
        k8s_cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))
        return "\n---\n".join(json.dumps(d) for d in docs)

    def can(verb: str, resource: str, namespace: str) -> bool:
        try:
            k8s_cluster.kubectl("auth", "can-i", verb, resource, "-n", namespace, f"--as={user}")
            return True
        except CommandError as error:
            assert error.stdout.strip() == "no", error
            return False

    applied = install({})
    try:
        assert can("get", "secrets", release_ns) and can("patch", "pods", release_ns)
        for namespace in ("kube-system", team):
            for verb, resource in (("get", "secrets"), ("patch", "pods"), ("list", "pods"), ("create", "deployments")):
                assert not can(verb, resource, namespace), (verb, resource, namespace)
        assert not can("list", "secrets", release_ns)
        k8s_cluster.kubectl("delete", "-f", "-", input=applied)
        applied = install({"clusterWide": True})
        # Chosen explicitly: every namespace, kube-system included.
        assert can("get", "secrets", "kube-system") and can("patch", "pods", team)
    finally:
        k8s_cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=applied)


def _allowed(
    api: kubernetes.client.ApiClient, user: str, lease: str, verb: str, group: str, resource: str, namespace: str
) -> bool:
    resource, _, subresource = resource.partition("/")
    review = kubernetes.client.V1SubjectAccessReview(
        spec=kubernetes.client.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:serviceaccounts", "system:authenticated"],
            resource_attributes=kubernetes.client.V1ResourceAttributes(
                verb=verb, group=group, resource=resource, subresource=subresource or None, namespace=namespace,
                name=lease if resource == "leases" and verb != "create" else None,
            ),
        )
    )  # fmt: skip
    result = kubernetes.client.AuthorizationV1Api(api).create_subject_access_review(review)
    assert result.status is not None
    return bool(result.status.allowed)


def _check_rbac(
    api: kubernetes.client.ApiClient,
    release_ns: str,
    operator: str,
    watched: list[str],
    elsewhere: str,
    *,
    cluster_wide: bool,
) -> None:
    """The API server's own authorizer on every call the operator makes, and on some it must not."""
    user = f"system:serviceaccount:{release_ns}:{operator}"

    def allowed(call: tuple[str, str, str], namespace: str) -> bool:
        return _allowed(api, user, operator, *call, namespace)

    for namespace in watched:
        missing = [c for c in OPERATOR_CALLS if not allowed(c, namespace)]
        assert not missing, f"the chart's RBAC does not grant {missing} in {namespace}"
        extra = [c for c in NOT_GRANTED if allowed(c, namespace)]
        assert not extra, f"the chart's RBAC grants more than the operator uses: {extra}"
        assert not [c for c in LEADER_CALLS if allowed(c, namespace)], "the Lease lives in the release namespace"
    assert all(allowed(c, release_ns) for c in LEADER_CALLS)
    outside = [c for c in OPERATOR_CALLS if allowed(c, elsewhere)]
    assert outside == (OPERATOR_CALLS if cluster_wide else [])
    assert allowed(("watch", "apiextensions.k8s.io", "customresourcedefinitions"), "")
    # kopf lists namespaces only to resolve the ones it was told to watch.
    assert allowed(("list", "", "namespaces"), "") is not cluster_wide


# --- the operator's own pod knobs (issue 17 item 4) ------------------------------------------------


def test_operator_pod_knobs_render_and_pass_a_dry_run(
    monitoring_crds: Cluster, namespaces: list[str], tmp_path: Path
) -> None:
    knobs = {
        "imagePullSecrets": [{"name": "regcred"}],
        "operator": {
            "replicas": 2,
            "podAnnotations": {"team": "platform"},
            "podLabels": {"cost-center": "42"},
            "nodeSelector": {"node-role": "system"},
            "tolerations": [{"key": "system", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "spot", "operator": "DoesNotExist"}]}}]}},
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}
            ],
            "priorityClassName": "system-cluster-critical",
            "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        },
    }  # fmt: skip
    values = write_values(tmp_path / "v.yaml", knobs)
    release_ns = namespaces[0]
    rendered = template(values, release="knobs", namespace=release_ns)
    (deployment,) = only(documents(rendered), "Deployment")
    meta, pod = deployment["spec"]["template"]["metadata"], deployment["spec"]["template"]["spec"]
    assert meta["annotations"] == {"team": "platform"} and meta["labels"]["cost-center"] == "42"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"node-role": "system"}
    assert pod["tolerations"] == knobs["operator"]["tolerations"]  # type: ignore[index]
    assert pod["affinity"] == knobs["operator"]["affinity"]  # type: ignore[index]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["containers"][0]["resources"] == knobs["operator"]["resources"]  # type: ignore[index]
    # A spread constraint without a selector counts the operator's own pods.
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    out = monitoring_crds.kubectl(
        "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-", input=rendered
    )
    assert out.count("serverside-applied (server dry run)") == len(documents(rendered)), out
