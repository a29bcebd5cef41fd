"""A small operator module that kopf runs in this process (kopf.testing.KopfRunner) against the
test cluster, as `saigon-operator` runs kopf: for tests of what kopf does with our hooks."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from controlplane.cluster import Cluster
from kopf.testing import KopfRunner


def kopf_probe(
    cluster: Cluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, **env: str
) -> KopfRunner:
    """`source` (a module with kopf handlers, its login included) run by kopf in `namespace`;
    `env` reaches the module through the environment."""
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(source))
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return KopfRunner(["run", "--standalone", "--namespace", namespace, str(probe)], timeout=120)
