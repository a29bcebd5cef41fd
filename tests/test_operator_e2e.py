"""The operator end to end: real API server, operator, agents and runtimes (3 replicas) on 127.0.0.1.

`kubectl apply` a SaigonAdapter; the operator validates it and publishes the target; every
pod's agent fetches it over HTTPS, verifies it, writes it atomically and loads it into
its runtime; the operator folds the pods' reports into status. Ground truth is always
checked on the runtimes' own admin API, not only in status.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import kubernetes
import pytest
from controlplane.cluster import Cluster, CommandError, ControlPlane
from controlplane.processes import free_port
from saigon_e2e.artifacts import Artifact, make_artifact
from saigon_e2e.world import MODEL, World, running_world

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

REPLICAS = 3
RESULTS = os.environ.get("SAIGON_E2E_RESULTS")  # optional JSON file for the measured figures


@pytest.fixture(scope="module")
def world(
    k8s_cluster: Cluster, k8s_api_client: kubernetes.client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("operator-e2e")
    with running_world(
        k8s_cluster, k8s_api_client, workdir, prefix="e2e-operator", replicas=REPLICAS, source_dirs=('team',),
        results=RESULTS,
    ) as w:  # fmt: skip
        yield w


@pytest.fixture(scope="module")
def artifacts(world: World) -> dict[str, Artifact]:
    """v1/v2 of a ~5 MB adapter (rank 80 on all projections) and small ones for the rest."""
    base, out = world.base_model, world.workdir / "artifacts"
    made = {
        "big-v1": make_artifact(base, out / "big-v1", seed=11, rank=80),
        "big-v2": make_artifact(base, out / "big-v2", seed=12, rank=80),
    }
    for i in range(12):
        made[f"small-{i}"] = make_artifact(base, out / f"small-{i}", seed=100 + i)
    return made


def record(world: World, key: str, seconds: float) -> None:
    world.timings[key] = round(seconds, 3)
    print(f"\n[measure] {key}: {seconds:.3f}s")


def test_the_model_gets_its_children_and_status(world: World) -> None:
    out = world.cluster.kubectl(
        "get", "deployment,service,poddisruptionbudget,serviceaccount,role,rolebinding",
        "-n", world.namespace, "-l", f"saigon.ai/model={MODEL}", "-o", "json",
    )  # fmt: skip
    items = json.loads(out)["items"]
    kinds = sorted(i["kind"] for i in items)
    assert kinds == ["Deployment", "PodDisruptionBudget", "Role", "RoleBinding", "Service", "Service", "ServiceAccount"]
    uid = world.get_model()["metadata"]["uid"]
    assert all(i["metadata"]["ownerReferences"][0]["uid"] == uid for i in items)
    status = world.wait_for(
        lambda: (s := world.get_model().get("status") or {}).get("readyReplicas") == REPLICAS and s, 120, "model ready"
    )
    assert status["replicas"] == REPLICAS and status["updatedReplicas"] == REPLICAS
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"


def test_apply_serves_on_every_replica_then_new_version_then_delete(
    world: World, artifacts: dict[str, Artifact]
) -> None:
    v1, v2 = artifacts["big-v1"], artifacts["big-v2"]
    assert v1.size > 4_500_000, v1.size

    manifest = world.adapter_manifest("alice", user="alice", version="v1", artifact=v1)
    started = time.perf_counter()
    world.kubectl_apply(manifest)
    applied = time.perf_counter()
    status = world.wait_for(lambda: world.served_everywhere("alice", "v1"), 60, "v1 served by every replica")
    record(world, "apply_to_served_5MB_3_replicas_s", time.perf_counter() - started)
    record(world, "of_which_kubectl_apply_s", applied - started)
    assert world.runtimes_serve("user_alice", "v1")
    assert {p["digest"] for p in status["pods"]} == {v1.sha256}
    assert status["adapterName"] == "user_alice" and status["serving"] == "3/3"
    for pod in world.pods:
        assert os.readlink(pod.adapters_dir / "user_alice" / "active") == "v1"
        assert world.complete(pod, "user_alice")["choices"][0]["text"] is not None

    manifest = world.adapter_manifest("alice", user="alice", version="v2", artifact=v2)
    started = time.perf_counter()
    world.kubectl_apply(manifest)
    applied = time.perf_counter()
    world.wait_for(lambda: world.served_everywhere("alice", "v2"), 60, "v2 served by every replica")
    record(world, "version_change_to_served_5MB_3_replicas_s", time.perf_counter() - started)
    record(world, "of_which_kubectl_apply_update_s", applied - started)
    assert world.runtimes_serve("user_alice", "v2")
    for pod in world.pods:
        assert os.readlink(pod.adapters_dir / "user_alice" / "active") == "v2"
    reasons = [reason for _, reason, _ in world.events_for("alice")]
    assert reasons.count("PromotionStarted") == 1 and reasons.count("Promoted") == 1
    assert reasons.count("Served") == 2
    history = world.get_adapter("alice")["status"]["promotion"]["history"]  # type: ignore[index]
    assert [(h["version"], h["outcome"]) for h in history] == [("v1", "Promoted"), ("v2", "Promoted")]
    # The old version's files go once no pod serves it and no rollback may need it.
    world.wait_for(lambda: all(not (p.adapters_dir / "user_alice" / "v1").exists() for p in world.pods), 30, "v1 gone")

    started = time.perf_counter()
    world.delete_adapter("alice")
    world.wait_for(lambda: world.get_adapter("alice") is None, 60, "alice deleted")
    record(world, "delete_to_gone_3_replicas_s", time.perf_counter() - started)
    assert world.runtimes_serve("user_alice", None)
    for pod in world.pods:
        assert not (pod.adapters_dir / "user_alice").exists()


def test_ten_adapters_on_three_replicas(world: World, artifacts: dict[str, Artifact]) -> None:
    manifests = [
        world.adapter_manifest(f"team-{i}", user=f"u{i}", version="v1", artifact=artifacts[f"small-{i}"])
        for i in range(10)
    ]
    started = time.perf_counter()
    world.kubectl_apply(*manifests)
    for i in range(10):
        world.wait_for(lambda i=i: world.served_everywhere(f"team-{i}", "v1"), 90, f"team-{i} served")
    record(world, "apply_10_adapters_to_served_3_replicas_s", time.perf_counter() - started)
    for i in range(10):
        assert world.runtimes_serve(f"user_u{i}", "v1")
    world.wait_for(
        lambda: (
            (s := world.get_model()["status"]).get("adapters") == 10
            and all(p["adaptersLoaded"] == 10 for p in s["pods"])
        ),
        30,
        "the model counts 10 adapters loaded on every pod",
    )


def test_bad_sources_fail_alone(world: World, artifacts: dict[str, Artifact]) -> None:
    good = artifacts["small-10"]
    closed_port = free_port()
    bad = {
        "wrong-digest": world.adapter_manifest(
            "wrong-digest", user="wd", version="v1", url=world.sources.put("wd.tar", good.data), sha256="0" * 64
        ),
        "to-metadata": world.adapter_manifest(
            "to-metadata", user="md", version="v1",
            url=world.sources.put("md.tar", redirect="https://169.254.169.254/latest/meta-data/"), sha256=good.sha256,
        ),
        "other-loopback": world.adapter_manifest(
            "other-loopback", user="lo", version="v1", url="https://127.0.0.2:8443/a.tar", sha256=good.sha256
        ),
        "unreachable": world.adapter_manifest(
            "unreachable", user="ur", version="v1", url=f"https://127.0.0.1:{closed_port}/a.tar", sha256=good.sha256
        ),
        "corrupt": world.adapter_manifest(
            "corrupt", user="cr", version="v1",
            url=world.sources.put("cr.tar", b"not a tar" * 100), sha256=_sha(b"not a tar" * 100),
        ),
    }  # fmt: skip
    world.kubectl_apply(*bad.values(), world.adapter_manifest("fine", user="fine", version="v1", artifact=good))
    world.wait_for(lambda: world.served_everywhere("fine", "v1"), 60, "the good adapter is served")

    expected = {
        "wrong-digest": "DigestMismatch",
        "to-metadata": "SourceRejected",
        "other-loopback": "SourceRejected",
        "unreachable": "FetchFailed",
        "corrupt": "InvalidArtifact",
    }
    for name, reason in expected.items():

        def failed(name: str = name, reason: str = reason) -> dict[str, object] | None:
            status = (world.get_adapter(name) or {}).get("status") or {}
            ready = {c["type"]: c for c in status.get("conditions") or []}.get("Ready", {})
            ok = status.get("phase") == "Failed" and ready.get("reason") == reason and len(status.get("pods", [])) == 3
            return status if ok else None

        status = world.wait_for(failed, 60, f"{name} failed with {reason}")
        assert all(p["reason"] == reason for p in status["pods"])
        assert ("Warning", reason) in {(t, r) for t, r, _ in world.events_for(name)}
    digest = world.get_adapter("wrong-digest")["status"]["pods"][0]["error"]  # type: ignore[index]
    assert good.sha256 in digest
    # Nothing half-written, nothing loaded, and every pod stays Ready.
    for pod in world.pods:
        for user in ("wd", "md", "lo", "ur", "cr"):
            assert not list((pod.adapters_dir / f"user_{user}").glob("v1")), user
        assert world.runtime_adapters(pod).keys().isdisjoint({"user_wd", "user_md", "user_lo", "user_ur", "user_cr"})
    ready_pods = [p for p in world.core.list_namespaced_pod(world.namespace).items if _ready(p)]
    assert len(ready_pods) == REPLICAS
    for name in bad:
        world.delete_adapter(name)
    for name in bad:
        world.wait_for(lambda name=name: world.get_adapter(name) is None, 60, f"{name} deleted")


def test_invalid_spec_is_reported_and_not_retried(world: World, artifacts: dict[str, Artifact]) -> None:
    before = world.operator.metric("saigon_operator_reconciles_total", kind="SaigonAdapter", outcome="invalid")
    # The CRD's pattern lets this URL through; the operator refuses credentials in a URL.
    world.kubectl_apply(
        world.adapter_manifest("invalid", user="cn", version="v1", url="https://u:p@127.0.0.1/a.tar", sha256="a" * 64)
    )

    def invalid() -> dict[str, object] | None:
        status = (world.get_adapter("invalid") or {}).get("status") or {}
        ready = {c["type"]: c for c in status.get("conditions") or []}.get("Ready", {})
        return status if ready.get("reason") == "InvalidSpec" and ready.get("status") == "False" else None

    status = world.wait_for(invalid, 30, "Ready=False InvalidSpec")
    assert "credentials" in str(status["conditions"])
    assert status["phase"] == "Invalid" and not status.get("target")
    time.sleep(3)
    after = world.operator.metric("saigon_operator_reconciles_total", kind="SaigonAdapter", outcome="invalid")
    assert after - before == 1  # handled once, not in a loop
    assert world.runtimes_serve("user_cn", None)
    world.delete_adapter("invalid")
    world.wait_for(lambda: world.get_adapter("invalid") is None, 30, "invalid deleted")


def test_conflicting_adapters_for_one_name(world: World, artifacts: dict[str, Artifact]) -> None:
    world.kubectl_apply(world.adapter_manifest("first", user="dup", version="v1", artifact=artifacts["small-0"]))
    world.wait_for(lambda: world.served_everywhere("first", "v1"), 60, "first served")
    world.kubectl_apply(world.adapter_manifest("second", user="dup", version="v9", artifact=artifacts["small-1"]))

    def conflict() -> bool:
        status = (world.get_adapter("second") or {}).get("status") or {}
        return status.get("phase") == "Conflict"

    world.wait_for(conflict, 30, "second reports a conflict")
    assert world.runtimes_serve("user_dup", "v1")
    world.delete_adapter("first")
    world.wait_for(lambda: world.served_everywhere("second", "v9"), 60, "second takes the name over")
    assert world.runtimes_serve("user_dup", "v9")
    world.delete_adapter("second")
    world.wait_for(lambda: world.get_adapter("second") is None, 60, "second deleted")


def test_pvc_source(world: World, artifacts: dict[str, Artifact]) -> None:
    claim = world.workdir / "sources" / "team"
    source = artifacts["small-2"].directory
    target = claim / "adapters" / "legal"
    target.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (target / name).write_bytes((source / name).read_bytes())
    manifest = world.adapter_manifest(
        "legal", user="x", version="2026-01", source={"pvc": {"claimName": "team", "path": "adapters/legal"}}
    )
    manifest["spec"]["scope"] = {"domain": "legal"}
    world.kubectl_apply(manifest)
    status = world.wait_for(lambda: world.served_everywhere("legal", "2026-01"), 60, "pvc adapter served")
    assert status["adapterName"] == "domain_legal"
    assert world.runtimes_serve("domain_legal", "2026-01")


def test_agent_killed_mid_write_recovers_cleanly(world: World, artifacts: dict[str, Artifact]) -> None:
    assert world.kubelet is not None
    art = artifacts["small-3"]
    url = world.sources.put("slow/v1.tar", art.data, bytes_per_s=max(art.size / 4, 2048))  # ~4 s
    victim = world.pods[0]
    world.kubectl_apply(world.adapter_manifest("slow", user="slow", version="v1", artifact=art, url=url))
    world.wait_for(lambda: list((victim.adapters_dir / "user_slow").glob(".staging-*")), 30, "a write in progress")
    world.kubelet.kill_agent(victim)
    assert not (victim.adapters_dir / "user_slow" / "v1").exists()  # never half-published
    assert world.runtime_adapters(victim).get("user_slow", {}).get("version") is None  # nothing served
    world.sources.routes["slow/v1.tar"].bytes_per_s = None
    world.kubelet.start_agent(victim)
    world.wait_for(lambda: world.served_everywhere("slow", "v1"), 60, "served after the agent restarted")
    assert world.runtimes_serve("user_slow", "v1")
    assert not list((victim.adapters_dir / "user_slow").glob(".staging-*"))


def test_operator_restart_mid_sync_and_deletion_while_down(world: World, artifacts: dict[str, Artifact]) -> None:
    world.kubectl_apply(world.adapter_manifest("doomed", user="dm", version="v1", artifact=artifacts["small-5"]))
    world.wait_for(lambda: world.served_everywhere("doomed", "v1"), 60, "doomed served (and finalized by the operator)")
    art = artifacts["small-4"]
    url = world.sources.put("restart/v1.tar", art.data, bytes_per_s=max(art.size / 2, 2048))
    world.kubectl_apply(world.adapter_manifest("restart", user="rs", version="v1", artifact=art, url=url))
    world.wait_for(lambda: (world.get_adapter("restart") or {}).get("status", {}).get("target"), 30, "target published")
    world.operator.kill()  # mid-sync: the pods are still downloading

    # A deletion while the operator is down: the agents unload at once, the finalizer holds the object.
    world.delete_adapter("doomed")
    world.wait_for(lambda: world.runtimes_serve("user_dm", None), 60, "agents unload without the operator")
    assert world.get_adapter("doomed") is not None
    world.wait_for(lambda: world.runtimes_serve("user_rs", "v1"), 60, "agents finish the sync without the operator")

    started = time.perf_counter()
    world.operator.start()
    world.operator.wait_leading(timeout=60)
    record(world, "operator_restart_to_leading_s", time.perf_counter() - started)
    world.wait_for(lambda: world.served_everywhere("restart", "v1"), 60, "status converges after the restart")
    world.wait_for(lambda: world.get_adapter("doomed") is None, 60, "the deletion completes")
    for pod in world.pods:
        assert not (pod.adapters_dir / "user_dm").exists()


def test_a_new_pod_is_ready_only_once_its_adapters_are_loaded(world: World) -> None:
    assert world.kubelet is not None
    names = {
        (s := o.get("status") or {}).get("adapterName"): s["target"]["version"]
        for o in world.custom.list_namespaced_custom_object("saigon.ai", "v1alpha1", world.namespace, "saigonadapters")[
            "items"
        ]
        if (o.get("status") or {}).get("target") and (o.get("status") or {}).get("phase") == "Ready"
    }
    assert len(names) >= 10
    pod = world.kubelet.start_pod()
    try:
        world.kubelet.wait_runtimes_up()
        while not _ready(world.core.read_namespaced_pod(pod.name, world.namespace)):
            served = world.runtime_adapters(pod)
            assert len(served) < len(names) or all(served[n]["version"] == v for n, v in names.items())
            time.sleep(0.1)
        served = world.runtime_adapters(pod)
        assert all(served.get(n, {}).get("version") == v for n, v in names.items())
    finally:
        world.kubelet.stop_pod(pod)


def _ready(pod: kubernetes.client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_an_agent_that_cannot_watch_says_why_and_keeps_its_pod_unready(world: World) -> None:
    """An API error that stops the agent (here: its Role lost `list` on SaigonAdapters) is logged,
    becomes the pod's readiness-gate condition, and holds the pod out of the Service."""
    assert world.kubelet is not None
    rbac = kubernetes.client.RbacAuthorizationV1Api(world.core.api_client)
    role_name = f"{MODEL}-agent"
    original = world.core.api_client.sanitize_for_serialization(rbac.read_namespaced_role(role_name, world.namespace))
    crippled = [
        {**rule, "verbs": [v for v in rule["verbs"] if v not in ("list", "watch")]} for rule in original["rules"]
    ]
    rbac.patch_namespaced_role(role_name, world.namespace, {"rules": crippled})
    pod = world.kubelet.start_pod()
    try:
        world.kubelet.wait_runtimes_up()

        def gate() -> tuple[str | None, str | None, str | None]:
            body = world.core.read_namespaced_pod(pod.name, world.namespace)
            for c in body.status.conditions or []:
                if c.type == "saigon.ai/adapters-synced":
                    return c.status, c.reason, c.message
            return None, None, None

        world.wait_for(lambda: gate()[1] == "WatchFailed", 60, "the agent reports its failing watch")
        status, _, message = gate()
        assert status == "False" and message is not None and "403" in message
        assert not _ready(world.core.read_namespaced_pod(pod.name, world.namespace))
        assert "watching SaigonAdapters failed" in pod.log("agent")

        rbac.patch_namespaced_role(role_name, world.namespace, {"rules": original["rules"]})
        world.wait_for(lambda: gate()[0] == "True", 90, "the agent recovers once it may list again")
        world.wait_for(lambda: _ready(world.core.read_namespaced_pod(pod.name, world.namespace)), 90, "pod Ready")
    finally:
        rbac.patch_namespaced_role(role_name, world.namespace, {"rules": original["rules"]})
        world.kubelet.stop_pod(pod)


def _apply_once_the_api_server_admits_adapters(world: World, manifest: dict[str, object]) -> None:
    """For its first seconds a restarted API server refuses new SaigonAdapters with 503 while the
    chart's finalizer policy is bound: a MutatingAdmissionPolicy needs the CRD's schema, which the
    API server fetches from its own OpenAPI every 5 s. A client retries, as kubectl's user or a
    GitOps controller would; any other refusal fails the test."""
    deadline = time.monotonic() + 60
    while True:
        try:
            world.kubectl_apply(manifest)
            return
        except CommandError as error:
            if "ServiceUnavailable" not in error.stderr or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def test_watches_gone_and_an_api_server_restart_mid_run(world: World, artifacts: dict[str, Artifact]) -> None:
    """Every watch resumes from a resourceVersion etcd has compacted away (410 Gone), after the API
    server was down for seconds; changes made right after it is back still converge."""
    if not isinstance(world.cluster, ControlPlane):
        pytest.skip("restarts the test's own kube-apiserver; $SAIGON_TEST_KUBECONFIG names another cluster")
    world.kubectl_apply(world.adapter_manifest("before", user="bf", version="v1", artifact=artifacts["small-6"]))
    world.wait_for(lambda: world.served_everywhere("before", "v1"), 90, "served before the restart")
    assert world.operator.process is not None
    world.cluster.stop_apiserver()
    world.cluster.expire_watches()  # every resourceVersion a client holds is now compacted away
    time.sleep(8)  # longer than the leader's renew deadline (2/3 of its 10 s lease)
    world.cluster.start_apiserver()
    # Down longer than its renew deadline, the leader stopped at once and started over in place:
    # no process restart, so no container restart (and no CrashLoopBackOff) in a cluster.
    world.wait_for(lambda: "starting over as a standby" in world.operator.log(), 60, "the leader stops")
    world.operator.wait_leading(timeout=60)
    assert world.operator.process.poll() is None

    world.delete_adapter("before")
    after = world.adapter_manifest("after", user="af", version="v1", artifact=artifacts["small-7"])
    _apply_once_the_api_server_admits_adapters(world, after)
    world.wait_for(lambda: world.served_everywhere("after", "v1"), 120, "a new adapter converges after the restart")
    world.wait_for(lambda: world.runtimes_serve("user_af", "v1"), 60, "every runtime serves it")
    world.wait_for(lambda: world.runtimes_serve("user_bf", None), 60, "the deleted one is unloaded everywhere")
    world.wait_for(lambda: world.get_adapter("before") is None, 60, "its finalizer completes")
    # The agents' watches did resume from a compacted resourceVersion and listed again.
    assert any("410 Gone" in pod.log("agent") for pod in world.pods), world.diagnostics()
