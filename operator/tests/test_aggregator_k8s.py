"""The status writer against a real API server: refused writes are dropped, failing ones back off,
per-pod progress folds into the next transition."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from controlplane.cluster import Cluster
from controlplane.processes import free_port
from saigon_contract.kube import ApiError, Credentials, KubeClient
from saigon_contract.reports import AdapterReport, PodReport
from saigon_contract.specs import SpecError, Target, parse_adapter_spec
from saigon_e2e.world import install_crds
from saigon_operator.aggregator import Aggregator
from saigon_operator.events import EventRecorder
from saigon_operator.records import AdapterRecord
from saigon_operator.status import PodView


class CountingClient(KubeClient):
    """A real client that counts the status patches it sends, and those the API server has answered."""

    def __init__(self, credentials: Credentials) -> None:
        super().__init__(credentials, timeout_s=5)
        self.status_patches = 0
        self.status_answered = 0

    async def merge_patch(self, path: str, body: object) -> dict[str, Any]:
        if not path.endswith("/status"):
            return await super().merge_patch(path, body)
        self.status_patches += 1
        answer = await super().merge_patch(path, body)
        self.status_answered += 1
        return answer


def _record(namespace: str, name: str, uid: str) -> AdapterRecord:
    return AdapterRecord(
        namespace=namespace,
        name=name,
        uid=uid,
        model="m",
        generation=1,
        invalid=SpecError("InvalidSpec", "a spec the operator refuses"),
    )


async def _status_patches_in(client: CountingClient, record: AdapterRecord, seconds: float) -> int:
    aggregator = Aggregator(client, EventRecorder(client), lambda namespace, model: [])
    runner = asyncio.create_task(aggregator.run())
    try:
        aggregator.put_adapter(record)
        aggregator.mark_adapter((record.namespace, record.name))
        await asyncio.sleep(seconds)
        assert not runner.done(), runner.exception()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await client.close()
    return client.status_patches


def test_a_refused_status_write_is_not_retried_every_second(k8s_cluster: Cluster, k8s_namespace: str) -> None:
    install_crds(k8s_cluster)
    adapter = {
        "apiVersion": "saigon.ai/v1alpha1",
        "kind": "SaigonAdapter",
        "metadata": {"name": "refused", "namespace": k8s_namespace},
        "spec": {
            "modelRef": {"name": "m"},
            "scope": {"user": "1"},
            "version": "v1",
            "sha256": "e" * 64,
            "source": {"https": {"url": "https://adapters.example.com/1.tar"}},
        },
    }
    k8s_cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(adapter))
    uid = k8s_cluster.kubectl("get", "saigonadapter", "refused", "-n", k8s_namespace, "-o", "jsonpath={.metadata.uid}")
    # The API server itself refuses every status write to this object (422 Invalid).
    policy = f"deny-status-{k8s_namespace}"
    docs = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["saigon.ai"],
                            "apiVersions": ["*"],
                            "operations": ["UPDATE"],
                            "resources": ["saigonadapters/status"],
                        }
                    ]
                },
                "validations": [{"expression": "false", "message": "status writes refused by the test"}],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": k8s_namespace}}
                },
            },
        },
    ]
    k8s_cluster.kubectl("apply", "--server-side", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))
    try:
        credentials = Credentials.load(str(k8s_cluster.kubeconfig))
        # The policy takes effect when the API server's informer has it: wait for the first refusal.
        probe = KubeClient(credentials)

        async def refused() -> bool:
            try:
                path = f"/apis/saigon.ai/v1alpha1/namespaces/{k8s_namespace}/saigonadapters/refused/status"
                await probe.merge_patch(path, {"status": {"adapterName": "probe"}})  # valid for the schema
                return False
            except ApiError as exc:
                return exc.status == 422 and "refused by the test" in exc.message

        async def wait_refused() -> None:
            for _ in range(100):
                if await refused():
                    return
                await asyncio.sleep(0.1)
            raise AssertionError("the admission policy never refused a status write")

        asyncio.run(wait_refused())
        asyncio.run(probe.close())
        client = CountingClient(credentials)
        patches = asyncio.run(_status_patches_in(client, _record(k8s_namespace, "refused", uid), 5.0))
        # 422 will not heal by retrying: one attempt, not one a second.
        assert patches == 1, patches
    finally:
        k8s_cluster.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", policy)


def test_an_unreachable_api_server_is_retried_with_exponential_backoff() -> None:
    client = CountingClient(Credentials(host=f"https://127.0.0.1:{free_port()}", verify=False))
    patches = asyncio.run(_status_patches_in(client, _record("ns", "a", "uid-1"), 6.5))
    # Retries after 1, 2 and 4 s: 3 or 4 attempts in 6.5 s (one a second: 7).
    assert 3 <= patches <= 4, patches


def _pod(name: str, adapter: str, state: str | None) -> PodView:
    loaded = AdapterReport(state="Loaded", target="v1", version="v1", digest="e" * 64)
    reports = {adapter: loaded} if state == "Loaded" else {}
    return PodView(name=name, phase="Running", ready=True, deleting=False, spec_hash=None, report=PodReport(reports))


async def patches(client: CountingClient, count: int, what: str, timeout_s: float = 10.0) -> None:
    """Waits until `count` status patches are answered (a loaded CI host can be slow); fails on more."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while client.status_answered < count:
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.02)
    assert client.status_answered == client.status_patches == count, what


async def test_per_pod_progress_is_folded_into_the_ready_write(k8s_cluster: Cluster, k8s_namespace: str) -> None:
    """The target is written at once (the agents act on it), and so is Ready; a pod's progress in
    between (1/2 serving) waits up to progress_every_s, so the second pod's report folds into it."""
    install_crds(k8s_cluster)
    manifest = {
        "apiVersion": "saigon.ai/v1alpha1", "kind": "SaigonAdapter",
        "metadata": {"name": "folded", "namespace": k8s_namespace},
        "spec": {"modelRef": {"name": "m"}, "scope": {"user": "7"}, "version": "v1", "sha256": "e" * 64,
                 "source": {"https": {"url": "https://adapters.example.com/7.tar"}}},
    }  # fmt: skip
    k8s_cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(manifest))
    uid = k8s_cluster.kubectl("get", "saigonadapter", "folded", "-n", k8s_namespace, "-o", "jsonpath={.metadata.uid}")
    pods = {"p0": _pod("p0", "user_7", None), "p1": _pod("p1", "user_7", None)}
    client = CountingClient(Credentials.load(str(k8s_cluster.kubeconfig)))
    aggregator = Aggregator(client, EventRecorder(client), lambda namespace, model: list(pods.values()),
                            progress_every_s=1.5)  # fmt: skip
    runner = asyncio.create_task(aggregator.run())
    key = (k8s_namespace, "folded")
    spec = parse_adapter_spec(manifest["spec"])  # type: ignore[arg-type]
    target = Target(version=spec.version, sha256=spec.sha256, source=spec.source)
    try:
        record = AdapterRecord(namespace=k8s_namespace, name="folded", uid=uid, model="m", generation=1,
                               adapter_name=spec.adapter_name, desired=target, policy=spec.promotion)  # fmt: skip
        aggregator.put_adapter(record)
        await aggregator.write_adapter(key)
        assert client.status_patches == 1 and aggregator.adapters[key].written["target"]["version"] == "v1"

        pods["p0"] = _pod("p0", "user_7", "Loaded")
        aggregator.mark_adapter(key)
        await asyncio.sleep(0.5)
        assert client.status_patches == 1, "one pod of two serving is progress: it waits"
        pods["p1"] = _pod("p1", "user_7", "Loaded")
        aggregator.mark_adapter(key)
        await patches(client, 2, "Ready is written at once")
        assert aggregator.adapters[key].written["phase"] == "Ready"

        # Progress that nothing follows is still written, once the interval has passed.
        pods["p1"] = _pod("p1", "user_7", None)
        aggregator.mark_adapter(key)
        await patches(client, 3, "leaving Ready is a transition: at once")
        pods["p1"] = _pod("p1", "user_7", "Loaded")
        pods["p0"] = _pod("p0", "user_7", None)
        aggregator.mark_adapter(key)
        await asyncio.sleep(0.3)
        assert client.status_patches == 3
        await patches(client, 4, "progress is written once the interval has passed")
        written = aggregator.adapters[key].written
        assert written["serving"] == "1/2" and [p["state"] for p in written["pods"]] == ["Pending", "Loaded"]
        # Progress first seen long after the last write waits too (a bulk apply: agents load late).
        await asyncio.sleep(1.6)
        pods["p0"] = _pod("p0", "user_7", "Loaded")
        aggregator.mark_adapter(key)
        await patches(client, 5, "both serving again: Ready, at once")
        pods["p1"] = _pod("p1", "user_7", None)
        aggregator.mark_adapter(key)
        await patches(client, 6, "leaving Ready: at once")
        await asyncio.sleep(1.6)
        pods["p1"] = _pod("p1", "user_7", "Loaded")
        pods["p0"] = _pod("p0", "user_7", None)
        aggregator.mark_adapter(key)
        await asyncio.sleep(0.5)
        assert client.status_patches == 6, "progress first seen 1.6 s after the last write still waits"
        pods["p0"] = _pod("p0", "user_7", "Loaded")
        aggregator.mark_adapter(key)
        await patches(client, 7, "Ready folds the waiting progress into one write")
        assert aggregator.adapters[key].written["phase"] == "Ready"

        # Marked again with nothing changed (another adapter's entry in the same pod report): no write.
        # The written status is kept as JSON; a computed one with tuples once compared unequal to it.
        aggregator.mark_adapter(key)
        await asyncio.sleep(0.3)
        assert client.status_patches == 7
        assert not runner.done(), runner.exception()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await client.close()


async def test_progress_writes_of_a_bulk_apply_share_one_rate(k8s_cluster: Cluster, k8s_namespace: str) -> None:
    """Many adapters showing per-pod progress at once (a bulk apply): the interval grows with
    their number, so progress-only writes stay near progress_writes_per_s; Ready is never held."""
    install_crds(k8s_cluster)
    names = [f"bulk-{i}" for i in range(8)]
    manifests = [
        {
            "apiVersion": "saigon.ai/v1alpha1",
            "kind": "SaigonAdapter",
            "metadata": {"name": name, "namespace": k8s_namespace},
            "spec": {
                "modelRef": {"name": "m"},
                "scope": {"user": f"b{i}"},
                "version": "v1",
                "sha256": "e" * 64,
                "source": {"https": {"url": f"https://adapters.example.com/b{i}.tar"}},
            },
        }
        for i, name in enumerate(names)
    ]
    listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
    k8s_cluster.kubectl("apply", "--server-side", "-f", "-", input=listed)
    pods: dict[str, PodView] = {"p0": _pod("p0", "", None), "p1": _pod("p1", "", None)}

    def loaded(pod: str, adapters: list[str]) -> PodView:
        report = AdapterReport(state="Loaded", target="v1", version="v1", digest="e" * 64)
        return PodView(name=pod, phase="Running", ready=True, deleting=False, spec_hash=None,
                       report=PodReport(dict.fromkeys(adapters, report)))  # fmt: skip

    client = CountingClient(Credentials.load(str(k8s_cluster.kubeconfig)))
    aggregator = Aggregator(client, EventRecorder(client), lambda namespace, model: list(pods.values()),
                            progress_every_s=0.2, progress_writes_per_s=1.0)  # fmt: skip
    runner = asyncio.create_task(aggregator.run())
    try:
        for i, name in enumerate(names):
            uid = k8s_cluster.kubectl(
                "get", "saigonadapter", name, "-n", k8s_namespace, "-o", "jsonpath={.metadata.uid}"
            )
            spec = parse_adapter_spec(manifests[i]["spec"])  # type: ignore[arg-type]
            target = Target(version=spec.version, sha256=spec.sha256, source=spec.source)
            record = AdapterRecord(namespace=k8s_namespace, name=name, uid=uid, model="m", generation=1,
                                   adapter_name=spec.adapter_name, desired=target, policy=spec.promotion)  # fmt: skip
            aggregator.put_adapter(record)
            await aggregator.write_adapter((k8s_namespace, name))
        assert client.status_patches == len(names)
        assert all(aggregator.adapters[(k8s_namespace, n)].written["target"]["version"] == "v1" for n in names)

        adapter_names = [f"user_b{i}" for i in range(len(names))]
        pods["p0"] = loaded("p0", adapter_names)  # every adapter: 1/2 serving, progress only
        for name in names:
            aggregator.mark_adapter((k8s_namespace, name))
        await asyncio.sleep(1.0)
        # 8 waiting at 1 write/s: none before 8 s (with one waiting, 0.2 s would do); 4 left: 4 s.
        assert client.status_patches == len(names), "progress of a bulk apply waits longer"
        pods["p1"] = loaded("p1", adapter_names[:4])  # half of them Ready: written at once
        for name in names[:4]:
            aggregator.mark_adapter((k8s_namespace, name))
        await patches(client, len(names) + 4, "Ready is never held")
        await patches(client, 2 * len(names), "the progress that stays is written in the end", timeout_s=15)
        assert [aggregator.adapters[(k8s_namespace, n)].written["serving"] for n in names] == ["2/2"] * 4 + ["1/2"] * 4
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await client.close()
