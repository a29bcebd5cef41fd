"""Leader election on a real API server; fencing checked against its audit log, which records every
write and by whom.

A frozen leader (SIGSTOP) must not act again once a standby has taken the Lease over,
even when it wakes up with handlers that were half-way through a reconciliation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from controlplane.cluster import ControlPlane
from controlplane.waiting import eventually
from saigon_contract.kube import Credentials, KubeClient
from saigon_e2e.operator_proc import OperatorProcess
from saigon_e2e.world import install_crds
from saigon_operator.leader import LeaderElector, LeaseSettings, RenewalThread

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete"], "users": ["op-a", "op-b"]},
        {"level": "None"},
    ],
}


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Path]]:
    workdir = tmp_path_factory.mktemp("audit")
    policy, log = workdir / "policy.json", workdir / "audit.log"
    policy.write_text(json.dumps(AUDIT_POLICY))
    cluster = ControlPlane(extra_apiserver_args=(f"--audit-policy-file={policy}", f"--audit-log-path={log}"))
    try:
        install_crds(cluster)
        yield cluster, log
    finally:
        cluster.stop()


def writes(log: Path) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [e for e in events if e.get("stage") == "ResponseComplete"]


def received(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))


def is_lease(event: dict[str, Any]) -> bool:
    return (event.get("objectRef") or {}).get("resource") == "leases"


def model(replicas: int) -> str:
    return json.dumps({
        "apiVersion": "saigon.ai/v1alpha1", "kind": "SaigonModel", "metadata": {"name": "m"},
        "spec": {"baseModel": {"path": "/models/m"}, "image": "saigon/runtime:1", "replicas": replicas,
                 "tokenSecretRef": {"name": "tokens"}},
    })  # fmt: skip


def adapter(name: str) -> str:
    return json.dumps({
        "apiVersion": "saigon.ai/v1alpha1", "kind": "SaigonAdapter", "metadata": {"name": name},
        "spec": {"modelRef": {"name": "m"}, "scope": {"user": name}, "version": "v1", "sha256": "e" * 64,
                 "source": {"https": {"url": f"https://adapters.example.com/{name}.tar"}}},
    })  # fmt: skip


@pytest.mark.k8s
def test_a_frozen_leader_never_acts_after_a_standby_took_over_and_stands_by(
    audited: tuple[ControlPlane, Path], tmp_path: Path
) -> None:
    cluster, log = audited
    ns = "fenced"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("create", "secret", "generic", "tokens", "-n", ns, "--from-literal=admin-token=t")
    operators = {}
    for who in ("op-a", "op-b"):
        (tmp_path / who).mkdir()
        op = OperatorProcess(cluster, ns, tmp_path / who, lease_duration=3)
        op.kubeconfig = cluster.kubeconfig_for_user(who, ("system:masters",))
        operators[who] = op
    first, second = operators["op-a"], operators["op-b"]
    first.start()
    try:
        first.wait_leading()
        second.start()
        eventually(second.healthy, timeout=60, what="standby answers /healthz")
        cluster.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=model(1))
        eventually(lambda: cluster.kubectl("get", "deployment", "m", "-n", ns), timeout=30, what="leader reconciles")
        assert first.process is not None
        os.killpg(first.process.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        # Work for whoever leads: the frozen leader's watches buffer these events meanwhile.
        cluster.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=model(2))
        for name in ("a1", "a2", "a3"):
            cluster.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=adapter(name))
        second.wait_leading(timeout=30)
        eventually(
            lambda: cluster.kubectl("get", "deployment", "m", "-n", ns, "-o", "jsonpath={.spec.replicas}") == "2",
            timeout=30,
            what="the new leader reconciles",
        )
        time.sleep(max(0.0, 6 - (time.monotonic() - frozen_at)))
        os.killpg(first.process.pid, signal.SIGCONT)
        # It wakes with buffered watch events and half-done handlers, and must stop before acting:
        # it starts over in place (the same process) as a standby.
        eventually(lambda: "starting over as a standby" in first.log(), timeout=30, what="the old leader stops")
        eventually(first.healthy, timeout=60, what="the old leader answers again, as a standby")
        assert first.process.poll() is None, "no process restart: it is still running"
        assert first.metric("saigon_operator_leader") == 0.0
        time.sleep(1)
        audit = writes(log)
        took_over = min(
            received(e) for e in audit
            if e["user"]["username"] == "op-b" and is_lease(e) and e["responseStatus"]["code"] < 300
        )  # fmt: skip
        late = [
            f"{e['verb']} {e['requestURI']} -> {e['responseStatus']['code']}"
            for e in audit
            if e["user"]["username"] == "op-a" and not is_lease(e) and received(e) >= took_over
        ]
        assert not late, f"the old leader acted after the standby took over: {late}"
        assert [e for e in audit if e["user"]["username"] == "op-b" and not is_lease(e)], "the new leader acted"
    finally:
        if first.process is not None and first.process.poll() is None:
            os.killpg(first.process.pid, signal.SIGCONT)
        for op in (first, second):
            op.stop()


@pytest.mark.k8s
async def test_a_leader_whose_loop_is_busy_keeps_the_lease(k8s_cluster: Any, k8s_namespace: str) -> None:
    """Renewals run on a thread of their own: a handler that holds the operator's loop for longer
    than the renew deadline (a bulk apply's decoding and writes) must not cost the lease."""
    credentials = Credentials.load(str(k8s_cluster.kubeconfig))
    kube = KubeClient(credentials)
    lost: list[bool] = []
    elector = LeaderElector(kube, LeaseSettings.for_duration(k8s_namespace, "busy", 3.0), "busy-leader")
    elector.on_lost = lambda: lost.append(True)
    try:
        await elector.acquire()
        renewal = RenewalThread(elector, credentials)
        renewal.start()
        first = (await kube.get(elector.path))["spec"]["renewTime"]
        time.sleep(elector.settings.renew_deadline_s * 2.5)  # noqa: ASYNC251  (the loop is blocked on purpose)
        assert elector.may_act() and not lost
        assert (await kube.get(elector.path))["spec"]["renewTime"] > first
        renewal.stop()
        assert not elector.may_act() or elector.deadline - time.monotonic() <= elector.settings.renew_deadline_s
        await elector.release()
        lease = await kube.get(elector.path)
        assert lease["spec"].get("holderIdentity") is None
    finally:
        await kube.close()


@pytest.mark.k8s
async def test_without_renewals_the_leader_steps_down_at_its_deadline(k8s_cluster: Any, k8s_namespace: str) -> None:
    """The other side of the fence: a renewal thread that cannot reach the API server still stops
    the leader at its renew deadline, whatever the operator's loop is doing."""
    credentials = Credentials.load(str(k8s_cluster.kubeconfig))
    kube = KubeClient(credentials)
    lost: list[float] = []
    elector = LeaderElector(kube, LeaseSettings.for_duration(k8s_namespace, "cut", 3.0), "cut-leader")
    elector.on_lost = lambda: lost.append(time.monotonic())
    try:
        await elector.acquire()
        deadline = elector.deadline
        unreachable = dataclasses.replace(credentials, host="https://127.0.0.1:9")
        renewal = RenewalThread(elector, unreachable)
        renewal.start()
        time.sleep(elector.settings.renew_deadline_s + 1.5)  # noqa: ASYNC251  (the loop is blocked on purpose)
        assert lost and lost[0] >= deadline and not elector.may_act()
        renewal.stop()
    finally:
        await kube.close()


@pytest.mark.k8s
async def test_a_leader_renews_with_one_update_and_sees_a_takeover_through_the_conflict(
    k8s_cluster: Any, k8s_namespace: str
) -> None:
    """As client-go: the leader updates the Lease it last wrote without reading it first; a Lease
    someone else wrote since makes that update conflict, and then the read shows who holds it."""
    kube = KubeClient(Credentials.load(str(k8s_cluster.kubeconfig)))
    calls: list[str] = []
    request = kube.request

    async def counted(method: str, path: str, **kwargs: Any) -> Any:
        if path == elector.path:
            calls.append(method)
        return await request(method, path, **kwargs)

    kube.request = counted  # type: ignore[method-assign]
    elector = LeaderElector(kube, LeaseSettings.for_duration(k8s_namespace, "optimistic", 3.0), "first")
    try:
        await elector.acquire()
        calls.clear()
        assert await elector._renew() and await elector._renew()
        assert calls == ["PUT", "PUT"]
        lease = await request("GET", elector.path)
        lease["spec"]["holderIdentity"] = "second"
        await request("PUT", elector.path, body=lease)
        calls.clear()
        with pytest.raises(Exception, match=r"^second$"):
            await elector._renew()
        assert calls == ["PUT", "GET"]
    finally:
        await kube.close()
