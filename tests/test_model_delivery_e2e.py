"""A fetched base model end to end (issue 17 item 4): the operator's pod template runs
`saigon-agent fetch-model` before the agent and the runtime; replicas sharing a claim fetch it
once; a model that fails verification keeps its pod in Init with the cause as the message."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
from controlplane.cluster import Cluster
from saigon_e2e.artifacts import make_artifact
from saigon_e2e.world import MODEL, World, running_world

pytestmark = [pytest.mark.k8s, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(
    k8s_cluster: Cluster, k8s_api_client: kubernetes.client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("delivery-e2e")
    with running_world(k8s_cluster, k8s_api_client, workdir, prefix="e2e-delivery", replicas=1) as w:
        yield w


def model_archive(directory: Path) -> bytes:
    """The model directory as a release would ship it: under one top directory, gzip."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(directory, arcname="tiny-llama")
    return buffer.getvalue()


def roll_to(world: World, replicas: int, base_model: dict[str, object]) -> None:
    """Applies the model and replaces the pods with ones of the new template (the fake kubelet
    runs no Deployment controller)."""
    world.kubectl_apply(world.model_manifest(replicas=replicas, baseModel=base_model))
    kubelet = world.kubelet
    assert kubelet is not None

    def rolled() -> bool:
        init = {c["name"]: c for c in kubelet.template()["spec"]["initContainers"]}
        env = {e["name"]: e.get("value") for e in init.get("fetch-model", {}).get("env", [])}
        return env.get("SAIGON_MODEL_SHA256") == base_model["sha256"]

    world.wait_for(rolled, 30, "the Deployment's template fetches the base model")
    for pod in list(world.pods):
        kubelet.stop_pod(pod)


def test_replicas_share_one_fetched_and_verified_base_model(world: World) -> None:
    archive = model_archive(world.base_model)
    sha = hashlib.sha256(archive).hexdigest()
    url = world.sources.put("models/tiny-llama.tar.gz", archive)
    base = {"https": {"url": url}, "sha256": sha, "cache": {"claimName": "models"}}
    roll_to(world, 2, base)
    assert world.kubelet is not None
    pods = world.kubelet.start_pods(2)
    world.kubelet.wait_runtimes_up()
    assert [p.fetch_exit for p in pods] == [0, 0]
    # One download for both replicas: the second found <sha256>/ verified on the shared claim.
    assert world.sources.routes["models/tiny-llama.tar.gz"].hits == 1
    cached = world.kubelet.workdir / "claims" / "models" / sha
    assert (cached / "config.json").is_file() and (cached / "model.safetensors").is_file()
    assert "already in the cache" in pods[1].log("fetch-model") or "fetched by another pod" in pods[1].log(
        "fetch-model"
    )
    # The runtimes serve from the fetched copy (the kubelet supplies no base model of its own here).
    adapter = make_artifact(world.base_model, world.workdir / "delivery-adapter", seed=7)
    world.kubectl_apply(world.adapter_manifest("carol", user="carol", version="v1", artifact=adapter))
    world.wait_for(lambda: world.served_everywhere("carol", "v1", replicas=2), 90, "carol served by both replicas")
    for pod in pods:
        assert world.complete(pod, "user_carol")["choices"][0]["text"] is not None


def test_a_base_model_failing_verification_keeps_the_pod_in_init_naming_the_cause(world: World) -> None:
    archive = model_archive(world.base_model)
    url = world.sources.put("models/tampered.tar.gz", archive)
    wrong = "0" * 64
    roll_to(world, 1, {"https": {"url": url}, "sha256": wrong})
    assert world.kubelet is not None
    pod = world.kubelet.start_pod()
    assert pod.fetch_exit == 1 and pod.runtime is None and pod.agent is None
    status = world.core.read_namespaced_pod(pod.name, world.namespace).status
    (init,) = status.init_container_statuses
    message = init.state.terminated.message
    assert f"DigestMismatch: the base model's sha256 is {hashlib.sha256(archive).hexdigest()}" in message
    assert f"spec.baseModel.sha256 asks for {wrong}" in message
    assert status.phase == "Pending"
    # Nothing unverified is left where the runtime would look.
    assert not (pod.workdir / "volumes" / "base-model" / wrong).exists()
    assert MODEL in pod.name
