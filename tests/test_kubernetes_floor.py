"""The oldest Kubernetes release Saigon supports, tested: Chart.yaml's `kubeVersion` floor is the
release of the second API server (tests/controlplane/build-floor.sh), and there `helm install` of
the chart (its CRDs, the agent admission policy), a SaigonModel and a SaigonAdapter reach Ready
with the operator, real agents and runtimes under the fake kubelet.

Why 1.30: the agent policy is an admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy (GA in
1.30) that reads the pod-name claim of the agent's bound token (on by default from 1.30).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import kubernetes
import pytest
import yaml
from controlplane.cluster import Cluster
from saigon_chart import CHART
from saigon_contract import resources as r
from saigon_e2e.artifacts import make_artifact
from saigon_e2e.world import World, running_world

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

REPLICAS = 2


def chart_floor() -> tuple[int, int]:
    kube_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    match = re.fullmatch(r">=\s*(\d+)\.(\d+)\.0-0", kube_version)
    assert match, f"kubeVersion {kube_version!r} is not a plain floor"
    return int(match[1]), int(match[2])


def server_version(cluster: Cluster) -> tuple[int, int, str]:
    """From gitVersion (vMAJOR.MINOR.PATCH): the test builds stamp only that."""
    git_version = json.loads(cluster.kubectl("version", "-o", "json"))["serverVersion"]["gitVersion"]
    match = re.match(r"v(\d+)\.(\d+)\.", git_version)
    assert match, git_version
    return int(match[1]), int(match[2]), git_version


@pytest.fixture(scope="module")
def floor_world(k8s_floor_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    api = kubernetes.config.new_client_from_config(config_file=str(k8s_floor_cluster.kubeconfig))
    workdir = tmp_path_factory.mktemp("floor")
    try:
        with running_world(
            k8s_floor_cluster, api, workdir, prefix="floor", replicas=REPLICAS, chart_release="saigon"
        ) as world:
            yield world
    finally:
        api.close()


def test_the_floor_api_server_is_the_charts_floor(k8s_floor_cluster: Cluster, k8s_cluster: Cluster) -> None:
    major, minor, git_version = server_version(k8s_floor_cluster)
    assert (major, minor) == chart_floor(), f"the floor test runs {git_version}, the chart says {chart_floor()}"
    assert server_version(k8s_cluster)[:2] > (major, minor), "the main control plane tests a newer release"


def test_below_the_floor_helm_refuses_the_chart(k8s_floor_cluster: Cluster) -> None:
    major, minor = chart_floor()
    out = k8s_floor_cluster.helm("template", "saigon", str(CHART), "--kube-version", f"{major}.{minor}.0")
    assert "ValidatingAdmissionPolicy" in out
    with pytest.raises(Exception, match=r"kubeVersion|incompatible"):
        k8s_floor_cluster.helm("template", "saigon", str(CHART), "--kube-version", f"{major}.{minor - 1}.9")


def test_chart_model_and_adapter_are_ready_on_the_floor(floor_world: World) -> None:
    w = floor_world
    policies = json.loads(w.cluster.kubectl("get", "validatingadmissionpolicies", "-o", "json"))["items"]
    assert "saigon-agent-own-pod" in [p["metadata"]["name"] for p in policies], "helm installed the agent policy"
    model = w.wait_for(
        lambda: (s := w.get_model().get("status") or {}).get("readyReplicas") == REPLICAS and s, 120, "model ready"
    )
    assert {c["type"]: c["status"] for c in model["conditions"]}["Ready"] == "True"

    artifact = make_artifact(w.base_model, w.workdir / "artifacts" / "alice-v1", seed=7)
    w.kubectl_apply(w.adapter_manifest("alice", user="alice", version="v1", artifact=artifact))
    status = w.wait_for(lambda: w.served_everywhere("alice", "v1"), 120, "v1 served by every replica on the floor")
    assert status["serving"] == f"{REPLICAS}/{REPLICAS}"
    assert {p["digest"] for p in status["pods"]} == {artifact.sha256}
    assert w.runtimes_serve("user_alice", "v1")
    for pod in w.pods:
        # Each agent reported through its own pod (the admission policy let it, and only it).
        pod_obj = w.core.read_namespaced_pod(pod.name, w.namespace)
        assert json.loads(pod_obj.metadata.annotations[r.REPORT_ANNOTATION])
        assert w.complete(pod, "user_alice")["choices"][0]["text"] is not None
