"""kopf, as the operator runs it (saigon_operator.slim installed), hands its handlers objects
without managedFields, although the API server sends them: they are dropped before kopf queues
an event, which is what keeps a bulk apply's queued events small."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from controlplane.cluster import Cluster
from controlplane.waiting import eventually
from kopf_probe import kopf_probe

PROBE = """
import json, os
import kopf
from saigon_operator import slim

slim.install()


@kopf.on.login()
def login(**kwargs):
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.event("", "v1", "configmaps", labels={"slim-probe": "yes"})
def seen(body, **_):
    with open(os.environ["SLIM_PROBE_OUT"], "a") as out:
        out.write(json.dumps({"name": body["metadata"]["name"], "keys": sorted(body["metadata"])}) + "\\n")
"""


def test_handlers_see_objects_without_managed_fields(
    k8s_cluster: Cluster, k8s_namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "seen.jsonl"
    operator = kopf_probe(k8s_cluster, k8s_namespace, tmp_path, monkeypatch, PROBE, SLIM_PROBE_OUT=str(seen))
    # One object before the operator starts (it arrives by the initial listing), one after (by the watch).
    k8s_cluster.kubectl("create", "configmap", "listed", "-n", k8s_namespace, "--from-literal=a=1")
    k8s_cluster.kubectl("label", "configmap", "listed", "-n", k8s_namespace, "slim-probe=yes")
    with operator:
        eventually(lambda: "listed" in seen.read_text() if seen.exists() else False, timeout=30)
        k8s_cluster.kubectl("create", "configmap", "watched", "-n", k8s_namespace, "--from-literal=a=1")
        k8s_cluster.kubectl("label", "configmap", "watched", "-n", k8s_namespace, "slim-probe=yes")
        eventually(lambda: "watched" in seen.read_text(), timeout=30)

    sent = json.loads(
        k8s_cluster.kubectl("get", "configmap", "watched", "-n", k8s_namespace, "-o", "json", "--show-managed-fields")
    )
    assert sent["metadata"]["managedFields"]  # the API server does send them
    handled = [json.loads(line) for line in seen.read_text().splitlines()]
    assert {h["name"] for h in handled} == {"listed", "watched"}
    for h in handled:
        assert "managedFields" not in h["keys"], h
        assert {"name", "namespace", "uid", "resourceVersion", "labels"} <= set(h["keys"])
