"""Every PromQL expression of the chart's alerts and dashboards, evaluated by a real Prometheus
scraping a live Saigon: the real operator, running under the chart's own ServiceAccount and
RBAC against the test control plane, and a runtime pod (real `saigon-runtime` and
`saigon-agent` processes, started by the e2e harness's stand-in kubelet) serving tiny
adapters. The test provokes what each alert is about (a refused adapter, a refused spec, a
rollout blocked by a failing admission webhook, a thrashing cache, slow requests by a tiny
threshold, a runtime whose base model fails, a standby operator) and checks that each
expression returns data, then draws each dashboard to PNG with scripts/render_dashboards.py.

SAIGON_DASHBOARD_PNG_DIR=docs/dashboards makes it write the README's pictures.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from controlplane.cluster import Cluster
from controlplane.processes import free_port, spawn, terminate
from controlplane.waiting import eventually
from saigon_chart import (
    ALL_ON,
    CHART,
    RENDER_SCRIPT,
    alerts,
    dashboard_queries,
    documents,
    render_script,
    rule_groups,
    run_helm,
    template,
    write_values,
)
from saigon_chart.prometheus import Prometheus
from saigon_e2e.artifacts import Artifact, pack
from saigon_e2e.kubelet import FakeKubelet, RuntimePod
from saigon_e2e.source_server import SourceServer
from saigon_e2e.world import ADMIN_TOKEN, make_source_server
from saigon_runtime.testing.tiny import make_llama, write_random_adapter

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

VENV_BIN = Path(sys.executable).parent
RELEASE = "obs"
OPERATOR = f"{RELEASE}-saigon-operator"  # the chart's ServiceAccount, Lease and Deployment name
MODEL = "llama"
BROKEN_MODEL = "blocked"
GROUP, VERSION = "saigon.ai", "v1alpha1"
JOBS = {"operator": "saigon-operator", "runtime": "saigon-runtime", "agent": "saigon-agent", "router": "saigon-router"}
USERS = ("ana", "bo", "cy", "di")  # four adapters rotating through two device slots
WINDOW = "5m"  # covers the whole test: every event is inside every window
PNG_DIR = os.environ.get("SAIGON_DASHBOARD_PNG_DIR")
# Seconds of traffic: a short burst in CI; for the README's pictures, long enough to show curves
# (with a new adapter version rolled out in the middle).
TRAFFIC_S = 90.0 if PNG_DIR else 4.0

# Thresholds a healthy tiny model crosses, so every alert has something to say; windows long
# enough to hold the whole test, and no `for`, so that Prometheus fires them at once.
TEST_RULES: dict[str, dict[str, Any]] = {
    "adapterLoadFailures": {"window": WINDOW, "for": "0s"},
    "rolloutStuck": {"window": WINDOW, "for": "0s"},
    "rolloutRejected": {"window": WINDOW, "for": "0s"},
    "operatorNotLeading": {"for": "0s"},
    "cacheThrash": {"window": WINDOW, "for": "0s", "evictionsPerSecond": 0, "maxHitRatio": 1.0},
    "latencyHigh": {"window": WINDOW, "for": "0s", "p99Seconds": 0.001},
    "runtimeNotReady": {"for": "0s"},
    "promotionRolledBack": {"window": WINDOW, "for": "0s"},
    "downloadFailures": {"window": WINDOW, "for": "0s"},
}


@dataclass
class Stack:
    cluster: Cluster
    api: kubernetes.client.ApiClient
    system_ns: str
    namespace: str
    workdir: Path
    prometheus: Prometheus
    sources: SourceServer
    operator_log: Path
    operator: subprocess.Popen[bytes] | None = None
    kubelet: FakeKubelet | None = None
    broken_port: int = 0  # a runtime whose base model cannot load
    standby_at: float = 0.0  # when Prometheus saw the operator waiting for the Lease
    started_at: float = field(default_factory=time.time)
    ended_at: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Artifact] = field(default_factory=dict)

    def mark(self, phase: str) -> None:
        self.timings[phase] = round(time.time() - self.started_at, 1)

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api)

    @property
    def pod(self) -> RuntimePod:
        assert self.kubelet is not None
        (pod,) = self.kubelet.pods.values()
        return pod

    def apply(self, *objs: dict[str, Any]) -> None:
        docs = "\n---\n".join(json.dumps(o) for o in objs)
        self.cluster.kubectl("apply", "-n", self.namespace, "-f", "-", input=docs)

    def adapter(self, name: str) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "saigonadapters", name)
        assert isinstance(obj, dict)
        return obj

    def wait(self, probe: Any, what: str, timeout: float = 120.0) -> Any:
        operator = self.operator
        return eventually(
            probe, timeout, 0.2, what,
            details=lambda: f"--- operator log ---\n{self.operator_log_tail()}",
            give_up=lambda: operator is not None and operator.poll() is not None,
        )  # fmt: skip

    def operator_log_tail(self) -> str:
        return self.operator_log.read_text(errors="replace")[-4000:] if self.operator_log.exists() else ""


def model_manifest(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "baseModel": {"path": "/models/tiny-llama"},
        "image": "saigon/runtime:test",
        "replicas": 1,
        "tokenSecretRef": {"name": "tokens"},
        "cache": {"maxLoras": 2, "maxCpuLoras": 3, "maxRank": 8},
        "adapterSources": {"allowedCidrs": ["127.0.0.1/32"]},
    }
    body.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SaigonModel", "metadata": {"name": name}, "spec": body}


def adapter_manifest(
    stack: Stack, name: str, user: str, artifact: Artifact, version: str = "v1", **spec: Any
) -> dict[str, Any]:
    url = stack.sources.put(f"{name}/{version}.tar", artifact.data)
    body: dict[str, Any] = {
        "modelRef": {"name": MODEL},
        "scope": {"user": user},
        "version": version,
        "sha256": artifact.sha256,
        "source": {"https": {"url": url}},
    }
    body.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SaigonAdapter", "metadata": {"name": name}, "spec": body}


def blocking_webhook(namespace: str) -> dict[str, Any]:
    """An admission webhook nobody answers, for the blocked model's Deployment only: the API
    server fails those writes with a 500, as when a policy engine is down."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": f"saigon-test-blocker-{namespace}"},
        "webhooks": [
            {
                "name": "blocker.saigon.test",
                "clientConfig": {"url": f"https://127.0.0.1:{free_port()}/validate"},
                "rules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["deployments"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "objectSelector": {"matchLabels": {"saigon.ai/model": BROKEN_MODEL}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 2,
            }
        ],
    }


def complete(pod: RuntimePod, model: str, *, stream: bool = False) -> int:
    body = {"model": model, "prompt": "the cat and the dog", "max_tokens": 8, "temperature": 0, "stream": stream}
    request = urllib.request.Request(
        f"{pod.runtime_url}/v1/completions",
        data=json.dumps(body).encode(),
        # Inference auth is on by default in operator-built pods; the admin token may act for anyone.
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def start_operator(cluster: Cluster, system_ns: str, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The operator with the installed Deployment's own arguments, as the chart's ServiceAccount."""
    deployment = json.loads(cluster.kubectl("get", "deployment", OPERATOR, "-n", system_ns, "-o", "json"))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port = free_port()
    args = [*container["args"], "--http-host=127.0.0.1", f"--http-port={port}"]  # the last flag wins
    kubeconfig = cluster.kubeconfig_for_service_account(system_ns, OPERATOR)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": system_ns}
    return spawn([str(VENV_BIN / "saigon-operator"), *args], log, env=env), port


@pytest.fixture(scope="module")
def stack(
    k8s_cluster: Cluster, k8s_api_client: kubernetes.client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("observed")
    processes: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(_stop_all, processes)  # should anything below fail
        # First, as it takes a while to import torch and fail: a runtime whose base model
        # cannot load (SaigonRuntimeNotReady).
        broken_port = free_port()
        (workdir / "empty-model").mkdir()
        processes.append(spawn(
            [str(VENV_BIN / "saigon-runtime"), "serve", "--host", "127.0.0.1", "--port", str(broken_port),
             "--base-model", str(workdir / "empty-model"), "--device", "cpu"],
            workdir / "broken-runtime.log", env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        ))  # fmt: skip
        suffix = secrets.token_hex(3)
        system_ns, namespace = f"obs-system-{suffix}", f"obs-{suffix}"
        for name in (system_ns, namespace):
            kubernetes.client.CoreV1Api(k8s_api_client).create_namespace(
                kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))
            )
        values = write_values(workdir / "values.yaml", {"watchNamespaces": [namespace]})
        run_helm("install", RELEASE, str(CHART), "-n", system_ns, "--values", str(values), cluster=k8s_cluster)
        cleanup.callback(
            run_helm, "uninstall", RELEASE, "-n", system_ns, "--wait", "--timeout", "60s", cluster=k8s_cluster
        )
        for crd in ("saigonmodels.saigon.ai", "saigonadapters.saigon.ai"):
            k8s_cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        webhook = blocking_webhook(namespace)
        k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps(webhook))
        cleanup.callback(k8s_cluster.kubectl, "delete", "validatingwebhookconfiguration", webhook["metadata"]["name"])
        # A Lease held by a predecessor: the operator stands by until it expires.
        k8s_cluster.kubectl("apply", "-n", system_ns, "-f", "-", input=json.dumps({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": OPERATOR},
            # renewed now, for long enough that Prometheus sees the operator standing by first, however
            # long the operator takes to start on a loaded machine
            "spec": {"holderIdentity": "previous-operator", "leaseDurationSeconds": 20,
                     "renewTime": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
        }))  # fmt: skip
        sources, ca = make_source_server(workdir)
        cleanup.callback(sources.close)

        # The rules exactly as the chart renders them (with the test's thresholds).
        rules_values = write_values(
            workdir / "rules.yaml",
            {**ALL_ON, "metrics": {"jobs": JOBS}, "prometheusRule": {"enabled": True, "rules": TEST_RULES}},
        )
        groups = rule_groups(documents(template(rules_values, release=RELEASE, namespace=system_ns)))
        operator_log = workdir / "operator.log"
        operator, port = start_operator(k8s_cluster, system_ns, operator_log)
        processes.append(operator)
        prometheus = Prometheus(
            workdir / "prometheus",
            static_jobs={JOBS["operator"]: [(f"127.0.0.1:{port}", {"namespace": system_ns, "pod": f"{OPERATOR}-0"})]},
            file_sd_jobs=(JOBS["runtime"], JOBS["agent"]),
            rule_groups=groups,
        )
        assert prometheus.process is not None
        processes.append(prometheus.process)
        stack = Stack(
            k8s_cluster, k8s_api_client, system_ns, namespace, workdir, prometheus, sources, operator_log, operator
        )
        stack.broken_port = broken_port
        # Runs first: every process (runtime pod included) stops before the cluster is tidied.
        cleanup.callback(lambda: _stop_all(processes, stack.kubelet))
        _bring_up(stack, ca)
        yield stack


def _stop_all(processes: list[subprocess.Popen[bytes]], kubelet: FakeKubelet | None = None) -> None:
    """Stops them in parallel, each with its grace period; a second call finds nothing to do."""
    stoppers: list[Any] = [lambda p=p: terminate(p, grace_seconds=3) for p in processes if p.poll() is None]
    if kubelet is not None:
        stoppers.append(kubelet.stop)
    with ThreadPoolExecutor(max(len(stoppers), 1)) as pool:
        list(pool.map(lambda stop: stop(), stoppers))


def _artifact(base: Path, out: Path, *, seed: int, rank: int = 4) -> Artifact:
    write_random_adapter(base, out, rank=rank, alpha=2.0 * rank, seed=seed)
    return Artifact(out, pack(out))


def _bring_up(stack: Stack, ca: Path) -> None:
    prometheus, cluster, workdir = stack.prometheus, stack.cluster, stack.workdir
    not_leading = f'sum(saigon_operator_leader{{job="{JOBS["operator"]}"}}) < 1'
    prometheus.wait_for(not_leading, timeout=60)
    stack.standby_at = time.time()
    stack.mark("operator standing by")

    base = make_llama(workdir / "base", hidden=64, layers=2, intermediate=128)
    stack.artifacts = {user: _artifact(base, workdir / "artifacts" / user, seed=i + 1) for i, user in enumerate(USERS)}
    stack.artifacts["ana-v2"] = _artifact(base, workdir / "artifacts" / "ana-v2", seed=50)
    too_big = _artifact(base, workdir / "artifacts" / "too-big", seed=9, rank=16)  # above maxRank 8
    stack.wait(lambda: cluster.kubectl("get", "lease", OPERATOR, "-n", stack.system_ns, "-o",
                                       "jsonpath={.spec.holderIdentity}") not in ("", "previous-operator"),
               "the operator took the Lease over")  # fmt: skip
    stack.mark("operator leading")
    kubernetes.client.CoreV1Api(stack.api).create_namespaced_secret(
        stack.namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name="tokens"), string_data={"admin-token": ADMIN_TOKEN}
        ),
    )
    stack.apply(model_manifest(MODEL), model_manifest(BROKEN_MODEL))
    stack.wait(lambda: cluster.kubectl("get", "deployment", MODEL, "-n", stack.namespace), "runtime Deployment")
    (workdir / "sources").mkdir()
    stack.kubelet = FakeKubelet(
        cluster, stack.api, stack.namespace, MODEL,
        base_model=base, workdir=workdir / "pods", ca_bundle=ca, sources_root=workdir / "sources",
    )  # fmt: skip
    stack.kubelet.start_pods(1)
    stack.kubelet.wait_runtimes_up()
    stack.mark("runtime up")
    labels = {"namespace": stack.namespace, "model": MODEL}
    prometheus.set_targets(JOBS["runtime"], [
        (f"127.0.0.1:{stack.pod.runtime_port}", {**labels, "pod": stack.pod.name}),
        (f"127.0.0.1:{stack.broken_port}", {**labels, "pod": f"{MODEL}-broken"}),
        (f"127.0.0.1:{free_port()}", {**labels, "pod": f"{MODEL}-gone"}),
    ])  # fmt: skip
    # The pod's agent sidecar, as the chart's PodMonitor scrapes it (port agent-health).
    prometheus.set_targets(JOBS["agent"], [(f"127.0.0.1:{stack.pod.agent_port}", {**labels, "pod": stack.pod.name})])
    # Its counters must be scraped before the first sync: rate() sees only increases after a first sample.
    prometheus.wait_for(f'up{{job="{JOBS["agent"]}"}} == 1', timeout=120)

    stack.apply(
        *[adapter_manifest(stack, user, user, stack.artifacts[user]) for user in USERS],
        adapter_manifest(stack, "too-big", "ed", too_big),
        # The CRD lets this URL through; the operator refuses credentials in a URL.
        adapter_manifest(
            stack, "invalid", "fay", stack.artifacts["ana"], source={"https": {"url": "https://u:p@127.0.0.1/a.tar"}}
        ),
        # Published nowhere: the source answers 404 and the agent retries (SaigonAdapterDownloadFailures).
        adapter_manifest(
            stack,
            "unpublished",
            "gus",
            stack.artifacts["ana"],
            source={"https": {"url": stack.sources.url("nowhere/v1.tar")}},
        ),
        # Bo's archive under ana's digest: the agent refuses the bytes (a verification failure).
        adapter_manifest(stack, "forged", "hal", stack.artifacts["bo"], sha256=stack.artifacts["ana"].sha256),
    )
    for user in USERS:
        stack.wait(lambda u=user: stack.adapter(u).get("status", {}).get("phase") == "Ready", f"{user} served")
    stack.wait(lambda: stack.adapter("too-big").get("status", {}).get("phase") == "Failed", "too-big refused")
    stack.wait(lambda: stack.adapter("invalid").get("status", {}).get("phase") == "Invalid", "invalid refused")
    # A new version the runtime refuses: the promotion rolls back to v1 (SaigonPromotionRolledBack).
    stack.apply(adapter_manifest(stack, "cy", "cy", too_big, version="v2"))
    stack.wait(lambda: (stack.adapter("cy").get("status", {}).get("promotion") or {}).get("phase") == "RolledBack",
               "cy v2 rolled back")  # fmt: skip
    stack.mark("adapters settled")

    served = _traffic(stack)
    stack.mark("traffic done")
    # Until Prometheus has scraped the last of it.
    prometheus.wait_for(f'sum(saigon_generations_total{{pod="{stack.pod.name}"}}) >= {served}', timeout=30)
    prometheus.wait_for(f'sum(saigon_engine_ready{{pod="{MODEL}-broken"}}) == 0', timeout=60)
    stack.ended_at = time.time()
    stack.mark("scraped")
    print(f"\n[measure] observed stack phases (s since start): {stack.timings}")


# Skewed like real users: one hot adapter, a long tail (two device slots for four adapters).
WEIGHTS = {"ana": 8, "bo": 4, "cy": 2, "di": 1}


def _traffic(stack: Stack) -> int:
    """Four concurrent clients; returns how many generations were served.

    A first round creates every series; the rest comes once Prometheus has scraped them, so
    that rate() and increase() see it (they cannot see a series' first value as an increase).
    """
    import random

    rng = random.Random(7)
    population = [user for user, weight in WEIGHTS.items() for _ in range(weight)]

    def first_round(worker: int) -> list[int]:
        codes = [complete(stack.pod, f"user_{user}", stream=worker % 2 == 1) for user in USERS]
        return [*codes, complete(stack.pod, "domain_nowhere")]

    def client(deadline: float) -> list[int]:
        codes = []
        while time.monotonic() < deadline:
            codes.append(complete(stack.pod, f"user_{rng.choice(population)}", stream=rng.random() < 0.5))
            if rng.random() < 0.03:
                codes.append(complete(stack.pod, "domain_nowhere"))
            time.sleep(rng.expovariate(4.0))
        return codes

    with ThreadPoolExecutor(4) as pool:
        codes = [code for batch in pool.map(first_round, range(4)) for code in batch]
        stack.prometheus.wait_for(
            f'sum(saigon_generations_total{{pod="{stack.pod.name}"}}) >= {codes.count(200)}', timeout=30
        )
        deadline = time.monotonic() + TRAFFIC_S
        futures = [pool.submit(client, deadline) for _ in range(4)]
        if PNG_DIR:
            # Halfway through: version v2 of the hot adapter, rolled out under load.
            time.sleep(TRAFFIC_S / 2)
            stack.apply(adapter_manifest(stack, "ana", "ana", stack.artifacts["ana-v2"], version="v2"))
        codes += [code for future in futures for code in future.result()]
    assert codes.count(404) >= 4, codes
    assert set(codes) <= {200, 404}, sorted(set(codes))
    return codes.count(200)


def _values(result: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


def test_the_operator_runs_under_the_charts_rbac_without_a_refusal(stack: Stack) -> None:
    log = stack.operator_log.read_text(errors="replace")
    assert "Forbidden" not in log and " 403" not in log, stack.operator_log_tail()
    listed = stack.cluster.kubectl("get", "deployment,role,rolebinding,serviceaccount,service,pdb",
                                   "-n", stack.namespace, "-l", f"saigon.ai/model={MODEL}", "-o", "name")  # fmt: skip
    assert len(listed.split()) == 7, listed
    model = stack.custom.get_namespaced_custom_object(GROUP, VERSION, stack.namespace, "saigonmodels", MODEL)
    assert isinstance(model, dict) and model["status"]["readyReplicas"] == 1
    assert stack.adapter("too-big")["status"]["conditions"][0]["status"] == "False"
    events = stack.cluster.kubectl("get", "events", "-n", stack.namespace, "-o", "jsonpath={.items[*].reason}")
    assert "Served" in events.split()


def test_every_alert_expression_returns_data(stack: Stack) -> None:
    rules_values = write_values(
        stack.workdir / "check.yaml",
        {"metrics": {"jobs": JOBS}, "prometheusRule": {"enabled": True, "rules": TEST_RULES}},
    )
    found = alerts(documents(template(rules_values, release=RELEASE, namespace=stack.system_ns)))
    empty = []
    for name, rule in found.items():
        at = stack.standby_at if name == "SaigonOperatorNotLeading" else stack.ended_at
        result = stack.prometheus.query(rule["expr"], at=at)
        if not result:
            empty.append(name)
    assert not empty, f"no data for {empty}; targets: {stack.prometheus.targets()}"

    # What each one says, checked against what the test did.
    def labels_of(name: str, at: float) -> list[dict[str, str]]:
        return [s["metric"] for s in stack.prometheus.query(found[name]["expr"], at=at)]

    end = stack.ended_at
    assert {m["pod"] for m in labels_of("SaigonAdapterLoadFailures", end)} == {stack.pod.name}
    assert {m["pod"] for m in labels_of("SaigonRuntimeNotReady", end)} == {f"{MODEL}-broken", f"{MODEL}-gone"}
    assert {m["kind"] for m in labels_of("SaigonRolloutStuck", end)} == {"SaigonModel"}
    assert {(m["kind"], m["outcome"]) for m in labels_of("SaigonRolloutRejected", end)} == {
        ("SaigonAdapter", "invalid")
    }
    assert {m["namespace"] for m in labels_of("SaigonPromotionRolledBack", end)} == {stack.system_ns}
    assert {(m["pod"], m["result"]) for m in labels_of("SaigonAdapterDownloadFailures", end)} == {
        (stack.pod.name, "SourceUnavailable"),
        (stack.pod.name, "DigestMismatch"),
    }
    # A discriminating expression: once the operator leads, it is quiet.
    assert stack.prometheus.query(found["SaigonOperatorNotLeading"]["expr"], at=end) == []


def test_prometheus_evaluates_the_loaded_rules_and_fires_them(stack: Stack) -> None:
    groups = stack.prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == 9
    unhealthy = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not unhealthy, unhealthy
    firing = {a["labels"]["alertname"] for a in stack.prometheus.api("alerts")["alerts"] if a["state"] == "firing"}
    assert firing == {
        "SaigonAdapterLoadFailures", "SaigonRolloutStuck", "SaigonRolloutRejected", "SaigonAdapterCacheThrash",
        "SaigonLatencyP99High", "SaigonRuntimeNotReady", "SaigonPromotionRolledBack", "SaigonAdapterDownloadFailures",
    }  # fmt: skip


def test_rollback_and_download_alerts_fire_with_the_charts_defaults(tmp_path: Path) -> None:
    """`promtool test rules` on the rules as rendered with the chart's default windows and `for`:
    each alert fires on what it is about, and stays quiet on healthy series."""
    values = write_values(tmp_path / "v.yaml", {"prometheusRule": {"enabled": True}})
    docs = documents(template(values, release=RELEASE, namespace="saigon-system"))
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(docs)}))
    rules = alerts(docs)

    def expected(name: str, labels: dict[str, str], value: str = "") -> dict[str, Any]:
        """The alert with its labels, and its annotations as Prometheus expands them."""

        def expand(text: str) -> str:
            text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m[1]], text)
            return re.sub(r"\{\{ \$value[^}]*\}\}", value, text)

        annotations = {k: expand(v) for k, v in rules[name]["annotations"].items()}
        return {"exp_labels": {"severity": "warning", **labels}, "exp_annotations": annotations}

    op = 'job="saigon-operator", namespace="saigon-system", pod="op-0"'
    agent = 'job="saigon-agent", namespace="team", model="llama", pod="llama-1"'
    failing = f'{agent}, source="https", result="SourceUnavailable"'
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # One promotion rolls back at minute 10; promotions before were all Promoted.
                    {"series": f'saigon_operator_promotions_total{{{op}, outcome="Promoted"}}', "values": "0+1x60"},
                    {
                        "series": f'saigon_operator_promotions_total{{{op}, outcome="RolledBack"}}',
                        "values": "_x10 1x50",
                    },
                    # A source that 404s from minute 5 on, retried; and healthy downloads throughout.
                    {
                        "series": f'saigon_agent_downloads_total{{{agent}, source="https", result="ok"}}',
                        "values": "0+2x60",
                    },
                    {
                        "series": f"saigon_agent_downloads_total{{{failing}}}",
                        "values": "_x5 1+1x55",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": "9m", "alertname": "SaigonPromotionRolledBack", "exp_alerts": []},
                    {
                        "eval_time": "11m",
                        "alertname": "SaigonPromotionRolledBack",
                        "exp_alerts": [
                            expected("SaigonPromotionRolledBack", {"namespace": "saigon-system"}, value="1"),
                        ],
                    },
                    # The window (30m) has passed with no new rollback: quiet again.
                    {"eval_time": "45m", "alertname": "SaigonPromotionRolledBack", "exp_alerts": []},
                    # Failing since minute 5, `for: 5m`: pending at 8m, firing from 10m.
                    {"eval_time": "8m", "alertname": "SaigonAdapterDownloadFailures", "exp_alerts": []},
                    {
                        "eval_time": "12m",
                        "alertname": "SaigonAdapterDownloadFailures",
                        "exp_alerts": [
                            expected(
                                "SaigonAdapterDownloadFailures",
                                {
                                    "namespace": "team",
                                    "model": "llama",
                                    "pod": "llama-1",
                                    "result": "SourceUnavailable",
                                },
                            ),
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(["promtool", "test", "rules", "tests.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_dashboard_query_returns_finite_data(stack: Stack) -> None:
    substitute = render_script().substitute
    empty = []
    queries = list(dashboard_queries())
    assert len(queries) >= 20
    for query in queries:
        result = stack.prometheus.query(substitute(query.expr, WINDOW), at=stack.ended_at)
        if not any(math.isfinite(v) for v in _values(result)):
            empty.append(f"{query.dashboard} / {query.panel} / {query.legend}: {query.expr}")
    assert not empty, "\n".join(empty)


def test_dashboard_figures_match_what_the_test_did(stack: Stack) -> None:
    substitute = render_script().substitute

    def value(expr: str) -> float:
        return sum(_values(stack.prometheus.query(substitute(expr, WINDOW), at=stack.ended_at)))

    slots = stack.prometheus.query('saigon_adapter_slots{tier="device", pod=~"llama-[0-9a-f]+"}', at=stack.ended_at)
    assert _values(slots) == [2.0]
    assert value(f'sum(saigon_generations_total{{pod="{stack.pod.name}"}})') >= 4 * len(USERS)
    assert value(f'sum(saigon_adapter_evictions_total{{pod="{stack.pod.name}"}})') > 0
    assert value('sum(saigon_engine_ready{pod="llama-broken"})') == 0
    # The agent's own figures: four adapters and the refused version fetched, one source that 404s.
    agent = f'job="{JOBS["agent"]}", pod="{stack.pod.name}"'
    assert value(f'sum(saigon_agent_downloads_total{{{agent}, result="ok"}})') >= len(USERS) + 1
    assert value(f'sum(saigon_agent_downloads_total{{{agent}, result="SourceUnavailable"}})') >= 1
    assert value(f'sum(saigon_agent_retries_total{{{agent}, reason="SourceUnavailable"}})') >= 1
    assert value(f'sum(saigon_agent_verification_failures_total{{{agent}, reason="DigestMismatch"}})') == 1
    assert value(f'sum(saigon_agent_runtime_loads_total{{{agent}, result="RuntimeRejected"}})') >= 2  # too-big, cy v2
    assert value(f'sum(saigon_agent_sync_duration_seconds_count{{{agent}, result="ok"}})') >= len(USERS)
    assert value(f"sum(saigon_agent_download_bytes_total{{{agent}}})") >= sum(
        len(stack.artifacts[user].data) for user in USERS
    )
    assert value('sum(saigon_operator_promotions_total{outcome="RolledBack"})') == 1


def test_dashboards_render_to_png(stack: Stack, tmp_path: Path) -> None:
    out = Path(PNG_DIR) if PNG_DIR else tmp_path
    result = subprocess.run(
        [sys.executable, str(RENDER_SCRIPT), "--prometheus", stack.prometheus.url,
         "--start", f"{stack.started_at:.0f}", "--end", f"{stack.ended_at + 1:.0f}", "--step", "1",
         "--rate-interval", "15s", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["dashboard"] for r in reports} == {"saigon-runtime", "saigon-rollouts"}
    for report in reports:
        assert report["empty_panels"] == [], report
        png = Path(report["png"])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
