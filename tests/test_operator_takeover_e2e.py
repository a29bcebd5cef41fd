"""A restarted operator takes over a bulk apply of more adapters than kopf has workers.

Issue 19: with kopf indexes, a restarted operator held every object until all were indexed
while only `worker_limit` (64) objects could wait, so with more than 64 adapters it took the
lease and then never reconciled again, while /healthz said 200. Here 80 small adapters are
applied on one replica, the operator is SIGKILLed mid-convergence and a new one started with
64 kopf workers (the default is larger now):
every adapter must converge (Ready, served by the runtime), each loaded exactly once, and
the pod's readiness must never have flickered.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes
import pytest
from controlplane.cluster import Cluster
from saigon_contract import resources as r
from saigon_e2e.artifacts import make_lora
from saigon_e2e.world import GROUP, VERSION, World, running_world

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

ADAPTERS = 80
WORKERS = 64  # the restarted operator's kopf workers: fewer than the adapters


@pytest.fixture(scope="module")
def world(
    k8s_cluster: Cluster, k8s_api_client: kubernetes.client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("operator-takeover")
    with running_world(
        k8s_cluster, k8s_api_client, workdir, prefix="e2e-takeover", replicas=1, source_dirs=("team",)
    ) as w:
        yield w


def ready_count(world: World) -> int:
    items = world.custom.list_namespaced_custom_object(GROUP, VERSION, world.namespace, "saigonadapters")["items"]
    return sum(1 for item in items if (item.get("status") or {}).get("phase") == "Ready")


def gate_opened_at(world: World) -> str | None:
    """When the pod's adapter readiness gate last turned True (None: it is not True)."""
    (pod,) = world.pods
    body = world.core.read_namespaced_pod(pod.name, world.namespace)
    for c in body.status.conditions or []:
        if c.type == r.READINESS_GATE and c.status == "True":
            return str(c.last_transition_time)
    return None


def test_sigkill_mid_convergence_then_a_new_operator_converges_every_adapter(world: World) -> None:
    make_lora(world.base_model, world.workdir / "sources" / "team" / "shared", rank=4, seed=7)
    manifests = [
        world.adapter_manifest(
            f"t{i:03d}", user=f"t{i:03d}", version="v1", source={"pvc": {"claimName": "team", "path": "shared"}}
        )
        for i in range(ADAPTERS)
    ]

    def create(manifest: dict[str, Any]) -> None:
        world.custom.create_namespaced_custom_object(GROUP, VERSION, world.namespace, "saigonadapters", manifest)

    opened = world.wait_for(lambda: gate_opened_at(world), 60, "the pod's readiness gate open")
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, manifests))
    world.wait_for(lambda: ready_count(world) >= 5, 120, "the first adapters Ready")
    world.operator.kill()
    fault = time.perf_counter()
    at_kill = ready_count(world)
    print(f"\n[measure] killed the operator at {at_kill}/{ADAPTERS} Ready, {fault - started:.1f}s after the apply")

    world.operator.extra_args = (*world.operator.extra_args, f"--workers={WORKERS}")
    world.operator.start()
    world.operator.wait_leading(timeout=60)
    leading = time.perf_counter() - fault
    world.wait_for(lambda: ready_count(world) == ADAPTERS, 180, f"all {ADAPTERS} Ready after the restart", 0.25)
    all_ready = time.perf_counter() - fault
    print(f"[measure] fault to leading: {leading:.1f}s; fault to all {ADAPTERS} Ready: {all_ready:.1f}s")

    (pod,) = world.pods
    served = world.runtime_adapters(pod)
    assert all(served.get(f"user_t{i:03d}", {}).get("version") == "v1" for i in range(ADAPTERS))
    agent_log = pod.log("agent")
    loads = Counter(re.findall(r"SaigonAdapter (t\d{3}): version v1 loaded", agent_log))
    assert len(loads) == ADAPTERS and set(loads.values()) == {1}, loads.most_common(3)
    assert "no longer serves" not in agent_log
    assert gate_opened_at(world) == opened, "the pod's readiness gate closed and opened again"
    assert world.operator.healthy()
    # The model's own status is written coalesced, after the adapters' (eventually, not at once).
    world.wait_for(lambda: (world.get_model().get("status") or {}).get("adapters") == ADAPTERS, 60,
                   "the model's status counts every adapter")  # fmt: skip
