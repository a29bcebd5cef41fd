"""A stand-in kubelet: turns the operator's Deployment template into Pod objects whose containers
are real processes on 127.0.0.1 (a `saigon-runtime serve` and a `saigon-agent run` per pod).

The test control plane has no scheduler, kubelet or controller-manager, so this does
their jobs for the runtime pods and nothing more: it creates the Pod from the template,
starts the containers with the environment the template asks for (downward API and
secret references resolved, paths and ports localised), marks the pod Running, and
keeps the Ready condition equal to "runtime /readyz answers 200 and every readiness
gate is True", as a kubelet would.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import urllib3
from controlplane.cluster import Cluster
from controlplane.processes import free_port, spawn, terminate
from saigon_contract.agent_env import ENV as AGENT_ENV

VENV_BIN = Path(sys.executable).parent


@dataclass
class RuntimePod:
    name: str
    workdir: Path
    runtime_port: int
    agent_port: int
    runtime: subprocess.Popen[bytes] | None = None
    agent: subprocess.Popen[bytes] | None = None
    # The base model's init container (spec.baseModel https, s3 or huggingFace): its exit code.
    fetch_exit: int | None = None
    agent_env: dict[str, str] = field(default_factory=dict)
    # The runtime's Secret volumes on disk (local directory -> Secret name), kept up to date.
    secret_volumes: dict[Path, str] = field(default_factory=dict)
    cpu_nice: dict[str, int] = field(default_factory=dict)  # per container: see cpu_nice()

    @property
    def adapters_dir(self) -> Path:
        return self.workdir / "adapters"

    @property
    def runtime_url(self) -> str:
        return f"http://127.0.0.1:{self.runtime_port}"

    def log(self, which: str) -> str:
        path = self.workdir / f"{which}.log"
        return path.read_text(errors="replace") if path.exists() else ""


class FakeKubelet:
    def __init__(
        self,
        cluster: Cluster,
        api: kubernetes.client.ApiClient,
        namespace: str,
        model: str,
        *,
        base_model: Path,
        workdir: Path,
        ca_bundle: Path,
        sources_root: Path,
    ) -> None:
        self.cluster = cluster
        self.core = kubernetes.client.CoreV1Api(api)
        self.apps = kubernetes.client.AppsV1Api(api)
        self.namespace = namespace
        self.model = model
        self.base_model = base_model
        self.workdir = workdir
        self.ca_bundle = ca_bundle
        self.sources_root = sources_root
        self.pods: dict[str, RuntimePod] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._readiness_loop, name="fake-kubelet", daemon=True)
        self._thread.start()

    # --- pods -------------------------------------------------------------------------------------

    def template(self) -> dict[str, Any]:
        deployment = self.apps.read_namespaced_deployment(self.model, self.namespace)
        result: dict[str, Any] = self.core.api_client.sanitize_for_serialization(deployment.spec.template)
        return result

    def start_pods(self, count: int) -> list[RuntimePod]:
        return [self.start_pod() for _ in range(count)]

    def start_pod(self, name: str | None = None) -> RuntimePod:
        template = self.template()
        name = name or f"{self.model}-{secrets.token_hex(3)}"
        pod_body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": template["metadata"]["labels"],
                "annotations": template["metadata"].get("annotations", {}),
            },
            "spec": {**template["spec"], "nodeName": "fake-node"},
        }
        self.core.create_namespaced_pod(self.namespace, pod_body)
        self._set_status(
            name,
            {
                "phase": "Running",
                "podIP": "127.0.0.1",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Initialized", "status": "True"},
                    {"type": "ContainersReady", "status": "False"},
                    {"type": "Ready", "status": "False"},
                ],
            },
        )
        workdir = self.workdir / name
        (workdir / "adapters").mkdir(parents=True)
        pod = RuntimePod(name, workdir, free_port(), free_port())
        self.pods[name] = pod
        containers = {c["name"]: c for c in template["spec"]["containers"] + template["spec"]["initContainers"]}
        fetch = containers.get("fetch-model")
        if fetch is not None and not self._run_fetch_model(pod, template["spec"], fetch):
            return pod  # stays in Init, as a kubelet leaves a pod whose init container fails
        pod.agent_env = self._agent_env(pod, containers["agent"])
        pod.cpu_nice = cpu_nice(containers)
        self.start_agent(pod)  # native sidecar: first
        mounts = self._mount_volumes(pod, template["spec"], containers["runtime"])
        pod.runtime = spawn(
            [str(VENV_BIN / "saigon-runtime"), "serve"],
            workdir / "runtime.log",
            env=self._runtime_env(pod, containers["runtime"], mounts, fetched=fetch is not None),
        )
        weigh(pod.runtime.pid, pod.cpu_nice.get("runtime", 0))
        return pod

    def _run_fetch_model(self, pod: RuntimePod, pod_spec: dict[str, Any], container: dict[str, Any]) -> bool:
        """Runs the init container to completion; on failure records what a kubelet would
        (Init phase, the container terminated with its exit code and its log as the message)."""
        mounts = self._mount_volumes(pod, pod_spec, container)
        env = self._localise(self._base_env() | self._resolve_env(pod, container), mounts)
        env.update({AGENT_ENV.CA_BUNDLE: str(self.ca_bundle), "HOME": str(pod.workdir)})
        log = pod.workdir / "fetch-model.log"
        proc = spawn([str(VENV_BIN / "saigon-agent"), *container["command"][1:]], log, env=env)
        pod.fetch_exit = proc.wait(timeout=300)
        if pod.fetch_exit == 0:
            return True
        message = log.read_text(errors="replace")[-1024:]  # terminationMessagePolicy FallbackToLogsOnError
        terminated = {"exitCode": pod.fetch_exit, "reason": "Error", "message": message}
        self._set_status(
            pod.name,
            {
                "phase": "Pending",
                "conditions": [{"type": "Initialized", "status": "False", "reason": "ContainersNotInitialized"}],
                "initContainerStatuses": [
                    {"name": container["name"], "image": container["image"], "imageID": "", "ready": False,
                     "restartCount": 0, "state": {"terminated": terminated}},
                ],
            },
        )  # fmt: skip
        return False

    def _mount_volumes(self, pod: RuntimePod, pod_spec: dict[str, Any], container: dict[str, Any]) -> dict[str, Path]:
        """The runtime's volumes as local directories ({mount path: directory}): a Secret's keys as
        files (refreshed while the pod runs, as a kubelet does), an emptyDir per pod, a claim per
        claim name shared by every pod that mounts it and outliving them. The agent's adapters
        volume is set up separately."""
        volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"], {})
            if mount["name"] == "adapters":
                continue
            if "secret" in volume:
                local = pod.workdir / "volumes" / mount["name"]
                pod.secret_volumes[local] = volume["secret"]["secretName"]
                self._write_secret_volume(local, volume["secret"]["secretName"])
            elif "persistentVolumeClaim" in volume:
                local = self.workdir / "claims" / volume["persistentVolumeClaim"]["claimName"]
            elif "emptyDir" in volume:
                local = pod.workdir / "volumes" / mount["name"]
            else:
                continue
            local.mkdir(parents=True, exist_ok=True)
            mounts[mount["mountPath"]] = local
        return mounts

    def _write_secret_volume(self, local: Path, secret_name: str) -> None:
        secret = self.core.read_namespaced_secret(secret_name, self.namespace)
        local.mkdir(parents=True, exist_ok=True)
        for key, raw in (secret.data or {}).items():
            value = base64.b64decode(raw)
            path = local / key
            if path.exists() and path.read_bytes() == value:
                continue
            tmp = local / f".{key}.tmp"
            tmp.write_bytes(value)
            os.replace(tmp, path)  # as the kubelet's atomic ..data swap: readers see old or new

    def start_agent(self, pod: RuntimePod) -> None:
        pod.agent = spawn([str(VENV_BIN / "saigon-agent"), "run"], pod.workdir / "agent.log", env=pod.agent_env)
        weigh(pod.agent.pid, pod.cpu_nice.get("agent", 0))

    def kill_agent(self, pod: RuntimePod) -> None:
        assert pod.agent is not None
        os.killpg(pod.agent.pid, signal.SIGKILL)
        pod.agent.wait(timeout=10)

    def stop_pod(self, pod: RuntimePod, *, delete: bool = True) -> None:
        for proc in (pod.agent, pod.runtime):
            if proc is not None:
                terminate(proc, grace_seconds=5)
        self.pods.pop(pod.name, None)
        if delete:
            try:
                self.core.delete_namespaced_pod(pod.name, self.namespace, grace_period_seconds=0)
            except kubernetes.client.ApiException as exc:
                if exc.status != 404:
                    raise

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for pod in list(self.pods.values()):
            self.stop_pod(pod, delete=False)

    # --- environment ------------------------------------------------------------------------------

    def _resolve_env(self, pod: RuntimePod, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = item["value"] or ""
                continue
            source = item.get("valueFrom") or {}
            if "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                env[item["name"]] = {"metadata.name": pod.name, "metadata.namespace": self.namespace}[path]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = self.core.read_namespaced_secret(ref["name"], self.namespace)
                raw = (secret.data or {}).get(ref["key"])
                if raw is None:
                    if ref.get("optional"):
                        continue
                    raise KeyError(f"secret {ref['name']} has no key {ref['key']}")
                env[item["name"]] = base64.b64decode(raw).decode()
        return env

    def _base_env(self) -> dict[str, str]:
        keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH")
        return {k: v for k, v in os.environ.items() if k in keep}

    def _agent_env(self, pod: RuntimePod, container: dict[str, Any]) -> dict[str, str]:
        env = self._base_env() | self._resolve_env(pod, container)
        env.update(
            {
                AGENT_ENV.ADAPTERS_DIR: str(pod.adapters_dir),
                AGENT_ENV.RUNTIME_URL: pod.runtime_url,
                AGENT_ENV.SOURCES_ROOT: str(self.sources_root),
                AGENT_ENV.HEALTH_HOST: "127.0.0.1",
                AGENT_ENV.HEALTH_PORT: str(pod.agent_port),
                # Test-only: the artifact server's self-signed certificate.
                AGENT_ENV.CA_BUNDLE: str(self.ca_bundle),
                "KUBECONFIG": str(self.agent_kubeconfig(pod.name)),
                "HOME": str(pod.workdir),
            }
        )
        return env

    @staticmethod
    def _localise(env: dict[str, str], mounts: dict[str, Path]) -> dict[str, str]:
        """Paths inside the container's mounts, as the local directories standing in for them."""
        for name, value in env.items():
            for mount_path, local in mounts.items():
                if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                    env[name] = str(local) + value[len(mount_path.rstrip("/")) :]
                    break
        return env

    def _runtime_env(
        self, pod: RuntimePod, container: dict[str, Any], mounts: dict[str, Path], *, fetched: bool = False
    ) -> dict[str, str]:
        env = self._localise(self._base_env() | self._resolve_env(pod, container), mounts)
        if not fetched:  # a path in the image or on a claim: the test's own base model stands in
            env["SAIGON_BASE_MODEL"] = str(self.base_model)
        env.update(
            {
                "SAIGON_ADAPTERS_DIR": str(pod.adapters_dir),
                "SAIGON_HOST": "127.0.0.1",
                "SAIGON_PORT": str(pod.runtime_port),
                "SAIGON_DEVICE": "cpu",
                "HOME": str(pod.workdir),
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_VERBOSITY": "error",
                "OMP_NUM_THREADS": "1",
            }
        )
        if "SAIGON_DEMAND_URL" in env:  # the pod's own agent, on its local port
            env["SAIGON_DEMAND_URL"] = f"http://127.0.0.1:{pod.agent_port}"
        return env

    def agent_kubeconfig(self, pod: str) -> Path:
        """The agent talks to the API server as its pod's ServiceAccount, with a token bound to its
        pod as a kubelet projects it (so its Role and the chart's agent policy are exercised)."""
        return self.cluster.kubeconfig_for_pod(self.namespace, f"{self.model}-agent", pod)

    # --- readiness --------------------------------------------------------------------------------

    def _set_status(self, name: str, status: dict[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(name, self.namespace, {"status": status})

    def _readiness_loop(self) -> None:
        rounds = 0
        while not self._stop.wait(0.2):
            rounds += 1
            for pod in list(self.pods.values()):
                try:
                    self._refresh(pod)
                    if rounds % 5 == 0:  # Secret volumes follow their Secret within about a second
                        for local, secret_name in pod.secret_volumes.items():
                            self._write_secret_volume(local, secret_name)
                except (kubernetes.client.ApiException, OSError, urllib3.exceptions.HTTPError):
                    continue  # an API server that is down or restarting must not end the loop

    def _refresh(self, pod: RuntimePod) -> None:
        body = self.core.read_namespaced_pod(pod.name, self.namespace)
        gates = [g.condition_type for g in body.spec.readiness_gates or []]
        conditions = {c.type: c.status for c in body.status.conditions or []}
        ready = self._runtime_ready(pod) and all(conditions.get(g) == "True" for g in gates)
        want = "True" if ready else "False"
        if conditions.get("Ready") != want:
            self._set_status(
                pod.name,
                {"conditions": [{"type": "Ready", "status": want}, {"type": "ContainersReady", "status": want}]},
            )

    @staticmethod
    def _runtime_ready(pod: RuntimePod) -> bool:
        if pod.runtime is None or pod.runtime.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{pod.runtime_url}/readyz", timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_runtimes_up(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        for pod in self.pods.values():
            while not self._runtime_ready(pod):
                if pod.runtime is not None and pod.runtime.poll() is not None:
                    raise RuntimeError(f"runtime of {pod.name} exited:\n{pod.log('runtime')[-3000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"runtime of {pod.name} not up:\n{pod.log('runtime')[-3000:]}")
                time.sleep(0.25)


def wipe(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def cpu_nice(containers: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Per container, the nice value of its process's scheduling group that stands in for the CPU
    weight a kubelet gives the container's cgroup: cpu.shares = the CPU request in millicores x
    1024 / 1000, at least 2. One nice step is a 1.25x weight; the largest request of the pod is
    nice 0 (raising a nice value needs no privilege), so with a runtime asking for 500m and an agent
    for nothing (2 shares), the agent is nice 19. A pod without CPU requests (the tests' pods) keeps
    every container at 0."""
    shares = {
        name: max(2, _millicores(((c.get("resources") or {}).get("requests") or {}).get("cpu")) * 1024 // 1000)
        for name, c in containers.items()
    }
    top = max(shares.values(), default=2)
    if top <= 2:
        return {}
    return {name: min(19, round(math.log(top / share, 1.25))) for name, share in shares.items()}


def _millicores(quantity: str | int | float | None) -> int:
    if quantity is None:
        return 0
    text = str(quantity)
    return int(text[:-1]) if text.endswith("m") else round(float(text) * 1000)


def weigh(pid: int, nice: int) -> None:
    """Lowers the scheduling group of a process that leads a session of its own (Linux's autogroup:
    the kernel shares CPU between such groups first, and a thread's own nice value acts only within
    its group, as within a container's cgroup). Where autogroups are off, nothing changes."""
    if nice > 0:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/autogroup").write_text(str(nice))


def lead_a_session() -> None:
    """Makes this process lead a session (a scheduling group) of its own, so that weigh(os.getpid())
    lowers it and what it runs (kubectl) and not the shell that started it. A process group leader
    (started from an interactive shell) cannot: it forks, and the parent waits for the child and
    passes it Ctrl-C. Call it first, before any thread starts."""
    if os.getsid(0) == os.getpid():
        return
    with contextlib.suppress(PermissionError):
        os.setsid()
        return
    child = os.fork()
    if child == 0:
        os.setsid()
        return
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except KeyboardInterrupt:
            os.kill(child, signal.SIGINT)
    sys.exit(os.waitstatus_to_exitcode(status))
