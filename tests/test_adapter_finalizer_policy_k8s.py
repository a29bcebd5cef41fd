"""The chart's adapter finalizer policy on the real API server: the API server, not the operator,
puts the operator's finalizer on each SaigonAdapter created in a namespace the release watches.

Without it the operator writes every new adapter once just to add the finalizer: a third of its
API requests in a bulk apply (saigon_operator.adapter_controller adds it where it is missing).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from controlplane.cluster import Cluster
from controlplane.waiting import eventually
from saigon_chart import documents, only, template, write_values
from saigon_contract import resources as r
from saigon_e2e.world import install_crds, install_finalizer_policy

pytestmark = pytest.mark.k8s

HOLD = "example.com/hold"
POLICY_TEMPLATE = ("--show-only", "templates/adapter-finalizer-policy.yaml")


def adapter(name: str, finalizers: tuple[str, ...] = ()) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **({"finalizers": list(finalizers)} if finalizers else {})}
    source = {"pvc": {"claimName": "c", "path": "a"}}
    spec = {"modelRef": {"name": "m"}, "scope": {"user": "u1"}, "version": "v1", "source": source}
    return {"apiVersion": r.API_VERSION, "kind": r.ADAPTER_KIND, "metadata": meta, "spec": spec}


@pytest.fixture
def watched_and_other(k8s_api_client: kubernetes.client.ApiClient) -> Iterator[tuple[str, str]]:
    core = kubernetes.client.CoreV1Api(k8s_api_client)
    names = (f"fin-{secrets.token_hex(3)}", f"fin-other-{secrets.token_hex(3)}")
    for name in names:
        core.create_namespace({"metadata": {"name": name}})
    yield names
    custom = kubernetes.client.CustomObjectsApi(k8s_api_client)
    for name in names:  # no operator here to lift the finalizers: the namespaces could never go
        for item in custom.list_namespaced_custom_object(r.GROUP, r.VERSION, name, r.ADAPTER_PLURAL)["items"]:
            patch = {"metadata": {"finalizers": None}}
            custom.patch_namespaced_custom_object(r.GROUP, r.VERSION, name, r.ADAPTER_PLURAL,
                                                  item["metadata"]["name"], patch)  # fmt: skip
        core.delete_namespace(name)


def test_the_api_server_adds_the_finalizer_to_new_adapters_of_watched_namespaces(
    k8s_cluster: Cluster, k8s_api_client: kubernetes.client.ApiClient, watched_and_other: tuple[str, str]
) -> None:
    watched, other = watched_and_other
    install_crds(k8s_cluster)
    rendered = install_finalizer_policy(k8s_cluster, watched)
    assert [d["kind"] for d in documents(rendered)] == ["MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"]
    custom = kubernetes.client.CustomObjectsApi(k8s_api_client)

    def create(namespace: str, body: dict[str, Any]) -> list[str]:
        made = custom.create_namespaced_custom_object(r.GROUP, r.VERSION, namespace, r.ADAPTER_PLURAL, body)
        return list(made["metadata"].get("finalizers") or [])

    try:
        # In force once the API server's informers have the policy and its binding.
        probes = iter(range(1000))
        eventually(lambda: create(watched, adapter(f"probe-{next(probes)}")) == [r.FINALIZER], timeout=30,
                   what="the policy is in force")  # fmt: skip

        # Another controller's finalizer stays, ours joins it; one already there is not repeated.
        assert create(watched, adapter("held", (HOLD,))) == [HOLD, r.FINALIZER]
        assert create(watched, adapter("ours", (r.FINALIZER,))) == [r.FINALIZER]
        # Outside the watched namespaces no operator of this release would ever lift it.
        assert create(other, adapter("elsewhere")) == []

        # Only creation: the operator lifts it during deletion, and no update puts it back.
        lifted = custom.patch_namespaced_custom_object(
            r.GROUP, r.VERSION, watched, r.ADAPTER_PLURAL, "held", {"metadata": {"finalizers": [HOLD]}}
        )
        assert lifted["metadata"]["finalizers"] == [HOLD]
        relabelled = custom.patch_namespaced_custom_object(
            r.GROUP, r.VERSION, watched, r.ADAPTER_PLURAL, "held", {"metadata": {"labels": {"team": "a"}}}
        )
        assert relabelled["metadata"]["finalizers"] == [HOLD]
    finally:
        k8s_cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=rendered)


def test_the_policy_is_rendered_only_where_the_api_server_serves_it(tmp_path: Path) -> None:
    # Older API servers (the chart supports 1.30+) have no MutatingAdmissionPolicy in v1.
    older = documents(template(namespace="ops", api_versions=(), extra=("--kube-version", "1.35.0")))
    assert not only(older, "MutatingAdmissionPolicy")
    off = write_values(tmp_path / "off.yaml", {"adapterFinalizerPolicy": {"enabled": False}})
    assert not only(documents(template(off, namespace="ops")), "MutatingAdmissionPolicy")

    def selector(values: dict[str, Any]) -> Any:
        file = write_values(tmp_path / "v.yaml", values)
        (policy,) = only(documents(template(file, namespace="ops", extra=POLICY_TEMPLATE)), "MutatingAdmissionPolicy")
        return json.loads(json.dumps(policy["spec"]["matchConstraints"].get("namespaceSelector")))

    name_in = {"key": "kubernetes.io/metadata.name", "operator": "In"}
    assert selector({}) == {"matchExpressions": [{**name_in, "values": ["ops"]}]}
    assert selector({"watchNamespaces": ["a", "b"]}) == {"matchExpressions": [{**name_in, "values": ["a", "b"]}]}
    assert selector({"clusterWide": True}) is None
