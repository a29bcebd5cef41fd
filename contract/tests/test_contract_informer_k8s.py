"""The informer loop (list_and_watch) on a real API server: the list comes in pages, and neither
listed nor watched objects carry managedFields (a relist of 10,000 adapters once arrived as one
response with them, the largest transient of a restarted operator)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from controlplane.cluster import Cluster
from saigon_contract.kube import Credentials, KubeClient, list_and_watch, object_path

OBJECTS = 7


class PagedClient(KubeClient):
    """A real client that records the list requests it sends."""

    def __init__(self, credentials: Credentials) -> None:
        super().__init__(credentials, timeout_s=10)
        self.lists: list[dict[str, str]] = []

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        self.lists.append(dict(params or {}))
        return await super().get(path, params=params)


def configmap(namespace: str, name: str) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {"informer-probe": "yes"}},
    })  # fmt: skip


async def test_the_list_comes_in_pages_and_objects_without_managed_fields(
    k8s_cluster: Cluster, k8s_namespace: str
) -> None:
    docs = [configmap(k8s_namespace, f"c{i}") for i in range(OBJECTS)]
    k8s_cluster.kubectl("apply", "-f", "-", input="\n---\n".join(docs))
    sent = json.loads(k8s_cluster.kubectl("get", "configmap", "c0", "-n", k8s_namespace, "-o", "json",
                                          "--show-managed-fields"))  # fmt: skip
    assert sent["metadata"]["managedFields"]  # the API server does send them

    client = PagedClient(Credentials.load(str(k8s_cluster.kubeconfig)))
    relisted: list[list[dict[str, Any]]] = []
    listed = asyncio.Event()

    async def on_relist(items: list[dict[str, Any]]) -> None:
        relisted.append(items)
        listed.set()

    seen: list[tuple[str, dict[str, Any]]] = []

    async def inform() -> None:
        path = object_path("ConfigMap", k8s_namespace)
        params = {"labelSelector": "informer-probe=yes"}
        async for kind, obj in list_and_watch(client, path, params=params, on_relist=on_relist, page=3):
            seen.append((kind, obj))
            if kind == "ADDED":
                return

    try:
        task = asyncio.create_task(inform())
        await asyncio.wait_for(listed.wait(), timeout=30)
        k8s_cluster.kubectl("apply", "-f", "-", input=configmap(k8s_namespace, "watched"))
        await asyncio.wait_for(task, timeout=30)
    finally:
        await client.close()

    assert [p.get("limit") for p in client.lists] == ["3", "3", "3"]  # 7 objects: 3 + 3 + 1
    assert "continue" not in client.lists[0] and all(p.get("continue") for p in client.lists[1:])
    assert all(p.get("labelSelector") == "informer-probe=yes" for p in client.lists)
    assert sorted(i["metadata"]["name"] for i in relisted[0]) == sorted(f"c{i}" for i in range(OBJECTS))
    assert [k for k, _ in seen] == ["SYNC"] * OBJECTS + ["ADDED"]
    assert seen[-1][1]["metadata"]["name"] == "watched"
    for _, obj in seen:
        assert "managedFields" not in obj["metadata"] and obj["metadata"]["uid"]


async def test_with_keep_the_relist_gets_what_keep_makes_of_each_object(
    k8s_cluster: Cluster, k8s_namespace: str
) -> None:
    docs = [configmap(k8s_namespace, f"k{i}") for i in range(3)]
    k8s_cluster.kubectl("apply", "-f", "-", input="\n---\n".join(docs))
    client = KubeClient(Credentials.load(str(k8s_cluster.kubeconfig)))
    relisted: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
    seen: list[dict[str, Any]] = []

    async def on_relist(items: list[Any]) -> None:
        relisted.set_result(items)

    async def inform() -> None:
        path = object_path("ConfigMap", k8s_namespace)
        params = {"labelSelector": "informer-probe=yes"}
        keep = lambda o: o["metadata"]["name"]  # noqa: E731
        async for _, obj in list_and_watch(client, path, params=params, on_relist=on_relist, keep=keep):
            seen.append(obj)

    task = asyncio.create_task(inform())
    try:
        names = await asyncio.wait_for(relisted, timeout=30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
    assert sorted(names) == ["k0", "k1", "k2"]
    assert sorted(o["metadata"]["name"] for o in seen) == names  # the loop still gets each whole object
    assert all(o["metadata"]["uid"] and "managedFields" not in o["metadata"] for o in seen)
