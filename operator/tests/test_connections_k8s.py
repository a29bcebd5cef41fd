"""kopf logged in as the operator logs in (saigon_operator.connections) keeps to a bounded number of
connections to the API server, however many objects it handles at once; kopf's own session opens
one per concurrent request."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
from controlplane.cluster import Cluster
from controlplane.waiting import eventually
from kopf_probe import kopf_probe

OBJECTS = 40

PROBE = """
import asyncio, os
import kopf
from saigon_operator import connections


@kopf.on.login()
async def login(**kwargs):
    info = kopf.login_with_kubeconfig(**kwargs)
    return connections.bounded_session(info, limit=int(os.environ["PROBE_LIMIT"]))


@kopf.on.startup()
def configure(settings, **_):
    settings.queueing.worker_limit = 64


@kopf.on.create("", "v1", "configmaps", labels={"connection-probe": "yes"})
async def created(body, **_):
    await asyncio.sleep(0.3)  # many at once: each then patches its progress through kopf's session
    with open(os.environ["PROBE_OUT"], "a") as out:
        out.write(body["metadata"]["name"] + "\\n")
"""


def open_connections_to(port: int) -> int:
    """This process's established TCP connections to `port` (its socket inodes in /proc/net/tcp*)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
                count += 1
    return count


def test_kopf_keeps_to_the_bounded_pool(
    k8s_cluster: Cluster, k8s_namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = tmp_path / "done.txt"
    env = {"PROBE_OUT": str(done), "PROBE_LIMIT": "2"}
    operator = kopf_probe(k8s_cluster, k8s_namespace, tmp_path, monkeypatch, PROBE, **env)
    port = urlparse(k8s_cluster.server).port or 443
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.wait(0.01):
            peak = max(peak, open_connections_to(port))

    manifests = [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": f"c{i}", "namespace": k8s_namespace, "labels": {"connection-probe": "yes"}}}
        for i in range(OBJECTS)
    ]  # fmt: skip
    sampler = threading.Thread(target=watch, daemon=True)
    before = open_connections_to(port)  # the test's own clients (fixtures)
    with operator:
        sampler.start()
        k8s_cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(m) for m in manifests))
        eventually(lambda: len(done.read_text().split()) == OBJECTS if done.exists() else False, timeout=60)
        stop.set()
        sampler.join()
    assert sorted(done.read_text().split()) == sorted(f"c{i}" for i in range(OBJECTS))
    assert 1 <= peak - before <= 2, f"{peak - before} connections to the API server at once"
