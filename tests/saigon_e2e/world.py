"""One namespace with the CRDs, the operator, a SaigonModel and its runtime pods, plus helpers to
apply adapters and watch them converge. Shared by the operator's end-to-end tests."""

from __future__ import annotations

import base64
import json
import secrets
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
from controlplane.certs import CertificateAuthority
from controlplane.cluster import Cluster
from controlplane.waiting import eventually

from saigon_e2e.artifacts import Artifact, make_base
from saigon_e2e.kubelet import FakeKubelet, RuntimePod
from saigon_e2e.operator_proc import OperatorProcess
from saigon_e2e.source_server import SourceServer

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
MODEL = "llama"
ADMIN_TOKEN = "e2e-admin-token"
# Inference auth is on by default in operator-built pods; the admin token may act for any user.
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
GROUP, VERSION = "saigon.ai", "v1alpha1"


def install_crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    wait_crds_established(cluster)


def wait_crds_established(cluster: Cluster) -> None:
    for name in ("saigonmodels.saigon.ai", "saigonadapters.saigon.ai"):
        # kubectl wait fails outright while a new CRD has no conditions yet: ask again.
        eventually(
            lambda: cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s"),  # noqa: B023
            timeout=60,
            what=f"{name} established",
        )


def install_chart(cluster: Cluster, namespace: str, release: str) -> None:
    """The chart itself with its defaults (its CRDs and the agent policy), as `helm install`
    puts it on a cluster; helm checks the chart's kubeVersion against the API server's."""
    cluster.helm("install", release, str(REPO / "charts" / "saigon"), "--namespace", namespace)
    wait_crds_established(cluster)


def apply_chart_template(cluster: Cluster, template_file: str, **render: Any) -> str:
    """One template of the chart, rendered as `saigon_chart.template(**render)` would (its release,
    namespace, values), applied to the cluster; returns what it applied, for `kubectl delete`."""
    from saigon_chart import template  # deferred: helm is needed only here

    rendered = template(extra=("--show-only", f"templates/{template_file}"), **render)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=rendered)
    return rendered


def install_agent_policy(cluster: Cluster) -> None:
    """The chart's ValidatingAdmissionPolicy that confines each agent to its own pod."""
    apply_chart_template(cluster, "agent-policy.yaml", release="e2e")


def install_finalizer_policy(cluster: Cluster, namespace: str) -> str:
    """The chart's MutatingAdmissionPolicy that puts the operator's finalizer on each adapter
    created in `namespace`, as a release that watches that namespace installs it; returns what
    it applied."""
    return apply_chart_template(cluster, "adapter-finalizer-policy.yaml", namespace=namespace, release=namespace[:40])


def make_source_server(workdir: Path) -> tuple[SourceServer, Path]:
    ca = CertificateAuthority("saigon-e2e-sources")
    pair = ca.issue_server_cert(dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    pair.write(workdir / "src.crt", workdir / "src.key")
    (workdir / "ca.crt").write_bytes(ca.cert_pem)
    return SourceServer(workdir / "src.crt", workdir / "src.key"), workdir / "ca.crt"


@dataclass
class World:
    cluster: Cluster
    api: kubernetes.client.ApiClient
    namespace: str
    workdir: Path
    sources: SourceServer
    ca_bundle: Path
    base_model: Path
    operator: OperatorProcess
    kubelet: FakeKubelet | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api)

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api)

    @property
    def pods(self) -> list[RuntimePod]:
        assert self.kubelet is not None
        return list(self.kubelet.pods.values())

    # --- objects ----------------------------------------------------------------------------------

    def kubectl_apply(self, *objs: dict[str, Any]) -> None:
        docs = "\n---\n".join(json.dumps(o) for o in objs)
        self.cluster.kubectl("apply", "--server-side", "-n", self.namespace, "-f", "-", input=docs)

    def create_token_secret(self) -> None:
        self.create_secret("tokens", {"admin-token": ADMIN_TOKEN})

    def create_secret(self, name: str, data: dict[str, str]) -> None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.core.create_namespaced_secret(self.namespace, {"metadata": {"name": name}, "data": encoded})

    def secret_value(self, name: str, key: str) -> str:
        secret = self.core.read_namespaced_secret(name, self.namespace)
        return base64.b64decode((secret.data or {})[key]).decode()

    def model_manifest(self, replicas: int = 3, **spec: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "baseModel": {"path": "/models/tiny-llama"},
            "image": "saigon/runtime:test",
            "replicas": replicas,
            "tokenSecretRef": {"name": "tokens"},
            "adapterSources": {"pvcs": ["team"], "allowedCidrs": ["127.0.0.1/32"]},
            # The ~5 MB test adapter has rank 80.
            "cache": {"maxLoras": 8, "maxCpuLoras": 64, "maxRank": 96},
        }
        body.update(spec)
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SaigonModel", "metadata": {"name": MODEL}, "spec": body}

    def adapter_manifest(
        self,
        name: str,
        *,
        user: str,
        version: str,
        artifact: Artifact | None = None,
        url: str | None = None,
        **spec: Any,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"modelRef": {"name": MODEL}, "scope": {"user": user}, "version": version}
        if artifact is not None:
            body["sha256"] = artifact.sha256
            body["source"] = {"https": {"url": url or self.sources.put(f"{name}/{version}.tar", artifact.data)}}
        elif url is not None:
            body["source"] = {"https": {"url": url}}
        body.update(spec)
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SaigonAdapter", "metadata": {"name": name}, "spec": body}

    def get_adapter(self, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "saigonadapters", name
            )
            return obj
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def get_model(self) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "saigonmodels", MODEL
        )
        return obj

    def delete_adapter(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, "saigonadapters", name)

    def events_for(self, name: str) -> list[tuple[str, str, str]]:
        events = self.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}")
        return [(e.type, e.reason, e.message) for e in events.items]

    # --- waiting ----------------------------------------------------------------------------------

    def wait_for(self, probe: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
        return eventually(probe, timeout, interval, what, details=self.diagnostics)

    def served_everywhere(self, name: str, version: str, replicas: int | None = None) -> dict[str, Any] | None:
        """The adapter's status says every replica serves `version` (and how many replicas)."""
        obj = self.get_adapter(name)
        status = (obj or {}).get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        want = replicas if replicas is not None else len(self.pods)
        ok = (
            (status.get("target") or {}).get("version") == version
            and status.get("replicas") == want
            and status.get("replicasServing") == want
            and conditions.get("Ready", {}).get("status") == "True"
        )
        return status if ok else None

    def runtime_adapters(self, pod: RuntimePod) -> dict[str, dict[str, Any]]:
        request = urllib.request.Request(f"{pod.runtime_url}/admin/adapters", headers=ADMIN)
        with urllib.request.urlopen(request, timeout=5) as resp:
            body = json.load(resp)
        return {a["name"]: a for a in body["adapters"]}

    def runtimes_serve(self, adapter: str, version: str | None) -> bool:
        """Ground truth from every runtime's admin API (None: no runtime lists the adapter)."""
        for pod in self.pods:
            seen = self.runtime_adapters(pod).get(adapter)
            if version is None and seen is not None:
                return False
            if version is not None and (seen is None or seen.get("version") != version or seen.get("error")):
                return False
        return True

    def complete(self, pod: RuntimePod, model: str, prompt: str = "the cat") -> dict[str, Any]:
        data = json.dumps({"model": model, "prompt": prompt, "max_tokens": 3, "temperature": 0}).encode()
        request = urllib.request.Request(
            f"{pod.runtime_url}/v1/completions", data=data, headers={"Content-Type": "application/json", **ADMIN}
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            result: dict[str, Any] = json.load(resp)
            return result

    def diagnostics(self) -> str:
        parts = [f"--- operator log (tail) ---\n{self.operator.log()[-3000:]}"]
        for pod in self.pods if self.kubelet else []:
            parts.append(f"--- agent {pod.name} (tail) ---\n{pod.log('agent')[-2000:]}")
        return "\n".join(parts)


@contextmanager
def running_world(
    cluster: Cluster, api: kubernetes.client.ApiClient, workdir: Path, *, prefix: str, replicas: int,
    source_dirs: tuple[str, ...] = (), results: str | None = None, model_spec: dict[str, Any] | None = None,
    secrets_data: dict[str, dict[str, str]] | None = None, chart_release: str | None = None,
) -> Iterator[World]:  # fmt: skip
    """A namespace with the operator leading, a SaigonModel of `replicas` pods whose runtimes and
    agents run for real under the fake kubelet, and an HTTPS source server; all stopped after.
    `model_spec` adds to the SaigonModel's spec; `secrets_data` are Secrets created first.
    With `chart_release`, the CRDs and the admission policies come from `helm install` of the chart
    into the namespace; else from kubectl (the chart's templates, no release)."""
    namespace = f"{prefix}-{secrets.token_hex(3)}"
    kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    finalizer_policy = ""
    if chart_release:
        install_chart(cluster, namespace, chart_release)
    else:
        install_crds(cluster)
        install_agent_policy(cluster)
        finalizer_policy = install_finalizer_policy(cluster, namespace)
    sources, ca = make_source_server(workdir)
    # A lease long enough that a loaded 2-core machine never starves the leader's renewals
    # (it exits the moment its renew deadline, 2/3 of the lease, passes).
    operator = OperatorProcess(cluster, namespace, workdir, lease_duration=10, unload_timeout=60).start()
    w = World(cluster, api, namespace, workdir, sources, ca, make_base(workdir / "base"), operator)
    try:
        w.create_token_secret()
        for name, data in (secrets_data or {}).items():
            w.create_secret(name, data)
        operator.wait_leading()
        w.kubectl_apply(w.model_manifest(replicas=replicas, **(model_spec or {})))
        w.wait_for(lambda: w.cluster.kubectl("get", "deployment", MODEL, "-n", namespace), 30, "deployment created")
        (workdir / "sources").mkdir(exist_ok=True)
        for sub in source_dirs:
            (workdir / "sources" / sub).mkdir(parents=True)
        w.kubelet = FakeKubelet(
            cluster, api, namespace, MODEL,
            base_model=w.base_model, workdir=workdir / "pods", ca_bundle=ca, sources_root=workdir / "sources",
        )  # fmt: skip
        w.kubelet.start_pods(replicas)
        w.kubelet.wait_runtimes_up()
        yield w
    finally:
        if w.kubelet is not None:
            w.kubelet.stop()
        operator.stop()
        sources.close()
        if finalizer_policy:
            cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=finalizer_policy)
        if results:
            Path(results).write_text(json.dumps(w.timings, indent=2))
