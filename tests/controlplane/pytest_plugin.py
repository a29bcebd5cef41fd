"""Pytest fixtures for tests against a real Kubernetes API server.

Registered from the repository's root conftest.py, so every test directory can use:

- `k8s_cluster` (session): the `Cluster` (kubeconfig, server, bin_dir, kubectl(), helm()).
- `k8s_api_client` (session): a `kubernetes.client.ApiClient` acting as the cluster admin.
- `k8s_namespace` (function): a fresh namespace, deleted after the test.
- `k8s_floor_cluster` (session): a second control plane whose kube-apiserver is the oldest
  release Saigon supports (build-floor.sh), with the same etcd, kubectl and helm.

Tests that use any of them get the `k8s` marker, so ``-m "not k8s"`` leaves them out.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator

import kubernetes
import pytest

from .cluster import Cluster, ControlPlane, ControlPlaneNotBuiltError, find_floor_apiserver, open_cluster

_CLUSTER_FIXTURES = frozenset({"k8s_cluster", "k8s_api_client", "k8s_namespace", "k8s_floor_cluster"})
TEST_NAMESPACE_LABEL = "saigon.ai/test-namespace"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _CLUSTER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.k8s)


def _running(start: Callable[[], Cluster]) -> Iterator[Cluster]:
    try:
        cluster = start()
    except ControlPlaneNotBuiltError as error:
        # A missing build is a failure, never a skip: CI must not silently drop these tests.
        raise pytest.fail.Exception(str(error), pytrace=False) from None
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def k8s_cluster() -> Iterator[Cluster]:
    """The test cluster: a fresh etcd + kube-apiserver, or $SAIGON_TEST_KUBECONFIG's cluster."""
    yield from _running(open_cluster)


@pytest.fixture(scope="session")
def k8s_floor_cluster() -> Iterator[Cluster]:
    """A fresh etcd + the floor release's kube-apiserver (always local: an existing cluster has
    one version only)."""
    yield from _running(lambda: ControlPlane(apiserver=find_floor_apiserver()))


@pytest.fixture(scope="session")
def k8s_api_client(k8s_cluster: Cluster) -> Iterator[kubernetes.client.ApiClient]:
    """A kubernetes ApiClient acting as the cluster admin."""
    client = kubernetes.config.new_client_from_config(config_file=str(k8s_cluster.kubeconfig))
    try:
        yield client
    finally:
        client.close()


def namespace_name_for(test_name: str) -> str:
    """A valid, unique namespace name (DNS label) that still tells which test made it."""
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:48].rstrip("-")
    return f"t-{slug}-{secrets.token_hex(3)}" if slug else f"t-{secrets.token_hex(3)}"


@pytest.fixture
def k8s_namespace(k8s_api_client: kubernetes.client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace (named after the test) that is deleted after the test."""
    core = kubernetes.client.CoreV1Api(k8s_api_client)
    name = namespace_name_for(request.node.name)
    core.create_namespace(
        kubernetes.client.V1Namespace(
            metadata=kubernetes.client.V1ObjectMeta(name=name, labels={TEST_NAMESPACE_LABEL: "true"})
        )
    )
    try:
        yield name
    finally:
        # Without a controller-manager the namespace stays Terminating; names never repeat.
        try:
            core.delete_namespace(name)
        except kubernetes.client.ApiException as error:
            if error.status != 404:  # a test may delete its namespace itself
                raise
