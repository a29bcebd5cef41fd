"""Fixtures of the operator's tests against the real API server."""

from __future__ import annotations

import pytest
from controlplane.cluster import Cluster
from saigon_e2e.world import install_crds


@pytest.fixture
def ns(k8s_cluster: Cluster, k8s_namespace: str) -> str:
    """A namespace with the CRDs installed and the models' token Secret, `tokens`."""
    install_crds(k8s_cluster)
    k8s_cluster.kubectl(
        "create", "secret", "generic", "tokens", "-n", k8s_namespace, "--from-literal=admin-token=t0ken"
    )
    return k8s_namespace
