"""The test control plane serves what the operator needs: CRDs, custom objects with a status
subresource, watches, RBAC, a kopf operator; and it leaves no processes behind."""

from __future__ import annotations

import json
import os
import queue
import select
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import pytest
from controlplane.cluster import EXISTING_KUBECONFIG_ENV, Cluster, CommandError, ControlPlane
from controlplane.processes import wait_until_gone
from controlplane.smoke import (
    CRD_MANIFEST,
    CRD_NAME,
    GROUP,
    HANDLED_BY_ANNOTATION,
    OPERATOR_SCRIPT,
    PLURAL,
    VERSION,
)
from controlplane.waiting import eventually
from kopf.testing import KopfRunner

pytestmark = pytest.mark.k8s

TESTS_DIR = Path(__file__).parent


@pytest.fixture(scope="module")
def widget_crd(k8s_cluster: Cluster) -> Iterator[str]:
    k8s_cluster.kubectl("apply", "-f", str(CRD_MANIFEST))
    k8s_cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    yield CRD_NAME
    k8s_cluster.kubectl("delete", "crd", CRD_NAME, "--wait=false")


@pytest.fixture
def widgets(k8s_api_client: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(k8s_api_client)


def widget(name: str, size: object, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size, **spec},
    }


def test_crd_is_established_and_discoverable(k8s_cluster: Cluster, widget_crd: str) -> None:
    established = k8s_cluster.kubectl(
        "get", "crd", widget_crd, "-o", 'jsonpath={.status.conditions[?(@.type=="Established")].status}'
    )
    assert established == "True"
    eventually(
        lambda: widget_crd in k8s_cluster.kubectl("api-resources", f"--api-group={GROUP}", "-o", "name"),
        what="widgets in discovery",
    )


def test_custom_object_create_patch_status_delete(
    widgets: kubernetes.client.CustomObjectsApi, k8s_namespace: str, widget_crd: str
) -> None:
    ns = k8s_namespace
    created = widgets.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, widget("w1", 3))
    assert created["spec"] == {"size": 3}
    assert created["metadata"]["generation"] == 1

    patched = widgets.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "w1", {"spec": {"size": 5}})
    assert patched["spec"]["size"] == 5
    assert patched["metadata"]["generation"] == 2

    status = {"status": {"phase": "Ready", "observedSize": 5}}
    with_status = widgets.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, "w1", status)
    assert with_status["status"] == status["status"]
    assert with_status["metadata"]["generation"] == 2, "a status write must not bump the generation"

    # With the status subresource on, the main endpoint ignores status changes.
    widgets.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "w1", {"status": {"phase": "Overwritten"}})
    assert widgets.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "w1")["status"]["phase"] == "Ready"

    widgets.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "w1")
    with pytest.raises(kubernetes.client.ApiException) as missing:
        widgets.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "w1")
    assert missing.value.status == 404


def test_schema_rejects_invalid_widgets(
    widgets: kubernetes.client.CustomObjectsApi, k8s_namespace: str, widget_crd: str
) -> None:
    for bad in (widget("bad-type", "big"), widget("negative", -1), {**widget("no-size", 0), "spec": {}}):
        with pytest.raises(kubernetes.client.ApiException) as rejected:
            widgets.create_namespaced_custom_object(GROUP, VERSION, k8s_namespace, PLURAL, bad)
        assert rejected.value.status == 422, bad


def test_watch_streams_added_modified_deleted(
    widgets: kubernetes.client.CustomObjectsApi, k8s_namespace: str, widget_crd: str
) -> None:
    ns = k8s_namespace
    start = widgets.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["metadata"]["resourceVersion"]
    events: queue.Queue[tuple[str, str, int]] = queue.Queue()
    watch = kubernetes.watch.Watch()

    def collect() -> None:
        # Watching from `start` sees every change made after the list, however late it connects.
        for event in watch.stream(
            widgets.list_namespaced_custom_object,
            GROUP,
            VERSION,
            ns,
            PLURAL,
            resource_version=start,
            timeout_seconds=30,
        ):
            obj = event["object"]
            events.put((event["type"], obj["metadata"]["name"], obj["spec"]["size"]))
            if event["type"] == "DELETED":
                watch.stop()

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    widgets.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, widget("watched", 1))
    widgets.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "watched", {"spec": {"size": 2}})
    widgets.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "watched")
    collector.join(timeout=30)

    seen = [events.get_nowait() for _ in range(events.qsize())]
    assert seen == [("ADDED", "watched", 1), ("MODIFIED", "watched", 2), ("DELETED", "watched", 2)]


def test_kopf_handler_updates_status(
    k8s_cluster: Cluster,
    widgets: kubernetes.client.CustomObjectsApi,
    k8s_namespace: str,
    widget_crd: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(k8s_cluster.kubeconfig))
    ns = k8s_namespace
    args = ["run", "--standalone", f"--namespace={ns}", str(OPERATOR_SCRIPT)]
    # `kopf run` makes the given registry the process-wide default; restore the previous one
    # so that this operator's handlers cannot leak into later kopf runs in the session.
    previous_registry = kopf.get_default_registry()
    try:
        with KopfRunner(args, registry=kopf.OperatorRegistry(), timeout=60) as runner:
            widgets.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, widget("handled", 7))
            handled = eventually(
                lambda: _handled_widget(widgets, ns, "handled"), timeout=60, what="kopf handled the widget"
            )
    finally:
        kopf.set_default_registry(previous_registry)

    assert handled["status"]["observedSize"] == 7
    assert handled["metadata"]["annotations"][HANDLED_BY_ANNOTATION] == "kopf"
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None
    assert "Handler 'observe_size' succeeded" in runner.output


def _handled_widget(widgets: kubernetes.client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any] | None:
    obj: dict[str, Any] = widgets.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    annotations = obj["metadata"].get("annotations") or {}
    if "observedSize" in obj.get("status", {}) and HANDLED_BY_ANNOTATION in annotations:
        return obj
    return None


def test_rbac_limits_a_service_account_to_its_role(k8s_cluster: Cluster, k8s_namespace: str) -> None:
    ns = k8s_namespace
    k8s_cluster.kubectl("create", "serviceaccount", "reader", "-n", ns)
    k8s_cluster.kubectl("create", "role", "reader", "--verb=get,list", "--resource=configmaps", "-n", ns)
    k8s_cluster.kubectl("create", "rolebinding", "reader", "--role=reader", f"--serviceaccount={ns}:reader", "-n", ns)
    reader = k8s_cluster.kubeconfig_for_service_account(ns, "reader")

    whoami = k8s_cluster.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig_path=reader)
    assert whoami == f"system:serviceaccount:{ns}:reader"
    eventually(
        lambda: k8s_cluster.kubectl("get", "configmaps", "-n", ns, kubeconfig_path=reader) is not None,
        what="the role binding to take effect",
    )
    with pytest.raises(CommandError, match="forbidden"):
        k8s_cluster.kubectl("get", "secrets", "-n", ns, kubeconfig_path=reader)
    with pytest.raises(CommandError, match="forbidden"):
        k8s_cluster.kubectl("get", "configmaps", "-n", "default", kubeconfig_path=reader)


def test_client_certificate_users_carry_their_groups(k8s_cluster: Cluster, k8s_namespace: str) -> None:
    if not isinstance(k8s_cluster, ControlPlane):
        pytest.skip("client certificates need the CA of a cluster this suite started")
    alice = k8s_cluster.kubeconfig_for_user("alice", ("team-a",))
    user_info = json.loads(k8s_cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig_path=alice))
    assert user_info["status"]["userInfo"]["username"] == "alice"
    assert "team-a" in user_info["status"]["userInfo"]["groups"]
    with pytest.raises(CommandError, match="forbidden"):
        k8s_cluster.kubectl("get", "configmaps", "-n", k8s_namespace, kubeconfig_path=alice)

    k8s_cluster.kubectl("create", "role", "team-a", "--verb=list", "--resource=configmaps", "-n", k8s_namespace)
    k8s_cluster.kubectl("create", "rolebinding", "team-a", "--role=team-a", "--group=team-a", "-n", k8s_namespace)
    eventually(
        lambda: k8s_cluster.kubectl("get", "configmaps", "-n", k8s_namespace, kubeconfig_path=alice) is not None,
        what="the group's role binding to take effect",
    )


def _env_for_child_processes() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != EXISTING_KUBECONFIG_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    return env


@pytest.mark.slow
def test_pytest_session_stops_its_control_plane(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids.json"
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            f"""
            import json

            def test_cluster_answers(k8s_cluster):
                assert k8s_cluster.kubectl("get", "namespace", "default", "-o", "name").strip() == "namespace/default"
                with open({str(pids_file)!r}, "w") as file:
                    json.dump(k8s_cluster.pids, file)
            """
        )
    )
    inner = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "controlplane.pytest_plugin"],
        cwd=tmp_path,
        # Only the plugin under test: third-party plugins would just slow the inner run down.
        env={**_env_for_child_processes(), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert inner.returncode == 0, inner.stdout + inner.stderr
    pids = json.loads(pids_file.read_text())
    assert set(pids) == {"etcd", "kube-apiserver"}
    assert wait_until_gone(list(pids.values()), timeout=5) == []


@pytest.mark.slow
def test_killed_test_process_takes_its_control_plane_along() -> None:
    starter = textwrap.dedent(
        """
        import json, time
        from controlplane.cluster import ControlPlane

        plane = ControlPlane()
        print(json.dumps({"pids": plane.pids, "workdir": str(plane.workdir)}), flush=True)
        time.sleep(600)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", starter],
        env=_env_for_child_processes(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([child.stdout], [], [], 240)
        line = child.stdout.readline() if ready and child.stdout else ""
        assert line, f"the control plane did not start: {child.stderr.read() if child.stderr else ''}"
        started = json.loads(line)
        assert set(started["pids"]) == {"etcd", "kube-apiserver"}
    finally:
        child.kill()  # SIGKILL: no finalizer, no atexit; only the kernel can clean up
        child.wait()
    assert wait_until_gone(list(started["pids"].values()), timeout=10) == []
    shutil.rmtree(started["workdir"], ignore_errors=True)
