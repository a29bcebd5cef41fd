"""The Helm chart as the tests see it: rendered by the real helm, its alert rules and its
dashboards' PromQL, and the CRDs that stand in for the Prometheus Operator's."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from controlplane.cluster import Cluster, ControlPlaneNotBuiltError, find_bin_dir

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "saigon"
DASHBOARDS = CHART / "dashboards"
MONITORING_CRDS = Path(__file__).with_name("monitoring-crds.yaml")
RENDER_SCRIPT = REPO / "scripts" / "render_dashboards.py"
# The build of helm in the test control plane defaults to Kubernetes 1.20 when no server is
# asked; the chart needs 1.30+ (Chart.yaml's kubeVersion).
KUBE_VERSION = "1.36.0"
# What such an API server serves beyond helm's built-in list (the chart renders it only where served).
KUBE_API_VERSIONS = ("admissionregistration.k8s.io/v1/MutatingAdmissionPolicy",)

# Every optional object on: what the tests render unless they say otherwise.
ALL_ON: dict[str, Any] = {
    "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
    "prometheusRule": {"enabled": True},
    "dashboards": {"enabled": True},
}


def helm_bin() -> Path:
    try:
        return find_bin_dir() / "helm"
    except ControlPlaneNotBuiltError as error:
        pytest.fail(str(error), pytrace=False)


def run_helm(*args: str, cluster: Cluster | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = cluster.env() if cluster is not None else None
    result = subprocess.run([str(helm_bin()), *args], capture_output=True, text=True, timeout=300, env=env, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited with {result.returncode}:\n{result.stderr}{result.stdout}")
    return result


def write_values(path: Path, values: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(values)))
    return path


def template(
    values_file: Path | None = None,
    *,
    release: str = "saigon",
    namespace: str = "saigon-system",
    include_crds: bool = False,
    api_versions: tuple[str, ...] = KUBE_API_VERSIONS,
    extra: tuple[str, ...] = (),
) -> str:
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION, *extra]
    for api in api_versions:
        args += ["--api-versions", api]
    if values_file is not None:
        args += ["--values", str(values_file)]
    if include_crds:
        args.append("--include-crds")
    return run_helm(*args).stdout


def documents(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def only(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def rule_groups(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The PrometheusRule's groups: exactly what Prometheus loads as a rule file."""
    (rule,) = only(docs, "PrometheusRule")
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def alerts(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for group in rule_groups(docs) for r in group["rules"] if "alert" in r}


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    legend: str
    expr: str


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def dashboard_queries() -> Iterator[PanelQuery]:
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield PanelQuery(name, panel["title"], target.get("legendFormat", ""), target["expr"])


def render_script() -> ModuleType:
    """scripts/render_dashboards.py, which owns how Grafana's variables become PromQL."""
    spec = importlib.util.spec_from_file_location("render_dashboards", RENDER_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def install_monitoring_crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(MONITORING_CRDS))
    for plural in ("servicemonitors", "podmonitors", "prometheusrules"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{plural}.monitoring.coreos.com", "--timeout=60s")
