"""SaigonAdapters reconciled by the operator's own controller (saigon_operator.adapter_controller),
against a real API server: what wakes a reconcile and what does not, and the finalizer."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from controlplane.cluster import Cluster
from controlplane.waiting import eventually
from saigon_e2e.operator_proc import OperatorProcess
from test_operator_k8s import SHA, apply, get, model

FINALIZER = "saigon.ai/finalizer"


def adapter(name: str, version: str = "v1", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "saigon.ai/v1alpha1",
        "kind": "SaigonAdapter",
        "metadata": {"name": name, **meta},
        "spec": {
            "modelRef": {"name": "m"},
            "scope": {"user": name},
            "version": version,
            "sha256": SHA,
            "source": {"https": {"url": f"https://adapters.example.com/{name}.tar"}},
        },
    }


def reconciles(operator: OperatorProcess) -> float:
    return operator.metric("saigon_operator_reconciles_total", kind="SaigonAdapter")


def test_only_changes_a_handler_reads_wake_a_reconcile(k8s_cluster: Cluster, ns: str, tmp_path: Path) -> None:
    operator = OperatorProcess(k8s_cluster, ns, tmp_path, lease_duration=3).start()
    try:
        operator.wait_leading()
        apply(k8s_cluster, ns, model(replicas=0))
        apply(k8s_cluster, ns, adapter("a"))
        eventually(lambda: get(k8s_cluster, ns, "saigonadapter", "a").get("status", {}).get("target"), timeout=30)
        time.sleep(1.5)  # the status write's own event, and the finalizer's, come back meanwhile
        assert reconciles(operator) == 1

        k8s_cluster.kubectl("label", "saigonadapter", "a", "-n", ns, "team=x")  # no handler reads labels
        time.sleep(1.5)
        assert reconciles(operator) == 1

        k8s_cluster.kubectl("annotate", "saigonadapter", "a", "-n", ns, "saigon.ai/promote=now")
        eventually(lambda: reconciles(operator) == 2, timeout=30, what="an annotation reconciles")
        apply(k8s_cluster, ns, adapter("a", version="v2"))
        eventually(lambda: reconciles(operator) == 3, timeout=30, what="a spec change reconciles")
        time.sleep(1.5)
        assert reconciles(operator) == 3

        # A finalizer taken off by hand comes back: the deletion must still wait for unloads.
        k8s_cluster.kubectl(
            "patch",
            "saigonadapter",
            "a",
            "-n",
            ns,
            "--type=json",
            "-p",
            '[{"op":"remove","path":"/metadata/finalizers"}]',
        )
        eventually(
            lambda: get(k8s_cluster, ns, "saigonadapter", "a")["metadata"].get("finalizers") == [FINALIZER],
            timeout=30,
            what="the finalizer restored",
        )
    finally:
        operator.stop()


def test_a_deletion_lets_go_of_its_own_finalizer_only_and_the_operator_stays_healthy(
    k8s_cluster: Cluster, ns: str, tmp_path: Path
) -> None:
    operator = OperatorProcess(k8s_cluster, ns, tmp_path, lease_duration=3, extra_args=["--stall-timeout=2"]).start()
    try:
        operator.wait_leading()
        apply(k8s_cluster, ns, model(replicas=0))
        apply(k8s_cluster, ns, adapter("b", finalizers=["example.com/hold"]))
        eventually(
            lambda: (
                sorted(get(k8s_cluster, ns, "saigonadapter", "b")["metadata"].get("finalizers", []))
                == ["example.com/hold", FINALIZER]
            ),
            timeout=30,
            what="our finalizer beside another's",
        )
        k8s_cluster.kubectl("delete", "saigonadapter", "b", "-n", ns, "--wait=false")
        eventually(
            lambda: get(k8s_cluster, ns, "saigonadapter", "b")["metadata"].get("finalizers") == ["example.com/hold"],
            timeout=30,
            what="ours released, theirs kept",
        )
        time.sleep(4)  # past --stall-timeout: an object held by someone else is no work of ours
        assert operator.healthy()
        k8s_cluster.kubectl(
            "patch", "saigonadapter", "b", "-n", ns, "--type=merge", "-p", json.dumps({"metadata": {"finalizers": []}})
        )
    finally:
        operator.stop()


def test_a_restarted_operator_reconciles_each_adapter_once(k8s_cluster: Cluster, ns: str, tmp_path: Path) -> None:
    apply(k8s_cluster, ns, model(replicas=0))
    for name in ("c", "d", "e"):
        apply(k8s_cluster, ns, adapter(name))
    for attempt in range(2):
        workdir = tmp_path / str(attempt)
        workdir.mkdir()
        operator = OperatorProcess(k8s_cluster, ns, workdir, lease_duration=3).start()
        try:
            operator.wait_leading()
            eventually(lambda op=operator: reconciles(op) == 3, timeout=30, what="each adapter reconciled")
            time.sleep(1.5)
            assert reconciles(operator) == 3
        finally:
            operator.stop()
