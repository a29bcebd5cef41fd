"""A real Kubernetes control plane for tests, in the spirit of controller-runtime's envtest.

`ControlPlane` runs etcd and kube-apiserver (RBAC on, TLS everywhere) on free loopback
ports with data in a temporary directory, and stops them again. There is no scheduler,
kubelet or controller-manager: objects are stored and validated, watches and RBAC work,
but nothing runs pods, garbage-collects owned objects or finishes namespace deletion.

`ExistingCluster` offers the same interface for a cluster named by the kubeconfig in
``$SAIGON_TEST_KUBECONFIG``; `open_cluster` picks one of the two.
"""

from __future__ import annotations

import abc
import base64
import ipaddress
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from . import certs, kubeconfig, processes

BUILD_SCRIPT = Path(__file__).with_name("build.sh")
FLOOR_BUILD_SCRIPT = Path(__file__).with_name("build-floor.sh")
EXISTING_KUBECONFIG_ENV = "SAIGON_TEST_KUBECONFIG"
BINARIES = ("etcd", "kube-apiserver", "kubectl", "helm")
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


class ControlPlaneNotBuiltError(RuntimeError):
    """The etcd / kube-apiserver / kubectl / helm binaries have not been built yet."""


class ControlPlaneStartError(RuntimeError):
    """etcd or kube-apiserver did not come up; the message carries the end of its log."""


class CommandError(RuntimeError):
    """kubectl or helm exited with a non-zero status."""

    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(f"{' '.join(args)} exited with {returncode}: {stderr.strip() or stdout.strip()}")
        self.args_run = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def find_bin_dir() -> Path:
    """The directory with the built binaries; build.sh owns the versions and the cache layout."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT), "--print-bin-dir"], capture_output=True, text=True, check=True)
    bin_dir = Path(result.stdout.strip().splitlines()[-1])
    missing = [name for name in BINARIES if not os.access(bin_dir / name, os.X_OK)]
    if not missing and not (bin_dir.parent / "VERSIONS").is_file():
        missing = ["VERSIONS (written when the build completes)"]
    if missing:
        raise ControlPlaneNotBuiltError(
            f"the test control plane is not built ({', '.join(missing)} missing under {bin_dir.parent}): "
            f"run {BUILD_SCRIPT.relative_to(BUILD_SCRIPT.parents[2])} "
            "(or `make controlplane`; it takes several minutes once, then is cached)"
        )
    return bin_dir


def find_floor_apiserver() -> Path:
    """The kube-apiserver of the oldest Kubernetes release Saigon supports (build-floor.sh)."""
    result = subprocess.run(
        ["bash", str(FLOOR_BUILD_SCRIPT), "--print-bin-dir"], capture_output=True, text=True, check=True
    )
    binary = Path(result.stdout.strip().splitlines()[-1]) / "kube-apiserver"
    if not (os.access(binary, os.X_OK) and (binary.parents[1] / "VERSIONS").is_file()):
        raise ControlPlaneNotBuiltError(
            f"the floor kube-apiserver is not built ({binary} missing): run "
            f"{FLOOR_BUILD_SCRIPT.relative_to(FLOOR_BUILD_SCRIPT.parents[2])} (or `make controlplane`)"
        )
    return binary


class Cluster(abc.ABC):
    """A cluster reachable through an admin kubeconfig, with the real kubectl and helm."""

    def __init__(self, kubeconfig_path: Path, bin_dir: Path, workdir: Path) -> None:
        self.kubeconfig = kubeconfig_path
        self.bin_dir = bin_dir
        self.workdir = workdir

    @property
    def server(self) -> str:
        return str(kubeconfig.current_cluster_entry(self.kubeconfig)["server"])

    def env(self, kubeconfig_path: Path | None = None) -> dict[str, str]:
        """An environment for subprocesses: KUBECONFIG set, kubectl and helm first on PATH,
        and helm's cache and config kept in the cluster's work directory."""
        helm_home = self.workdir / "helm"
        return {
            **os.environ,
            "KUBECONFIG": str(kubeconfig_path or self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }

    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 60.0, kubeconfig_path: Path | None = None
    ) -> str:
        """Runs the real kubectl as the admin (or with `kubeconfig_path`); returns its stdout,
        raises `CommandError` with its stderr."""
        return self._run("kubectl", args, input, timeout, kubeconfig_path)

    def helm(
        self,
        *args: str,
        input: str | None = None,
        timeout: float = 300.0,
        kubeconfig_path: Path | None = None,
    ) -> str:
        """Runs the real helm like `kubectl` (its cache and config stay in the work directory)."""
        return self._run("helm", args, input, timeout, kubeconfig_path)

    def _run(
        self,
        tool: str,
        args: tuple[str, ...],
        input: str | None,
        timeout: float,
        kubeconfig_path: Path | None,
    ) -> str:
        command = [str(self.bin_dir / tool), *args]
        result = subprocess.run(
            command,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(kubeconfig_path),
        )
        if result.returncode != 0:
            raise CommandError([tool, *args], result.returncode, result.stdout, result.stderr)
        return result.stdout

    def kubeconfig_for_token(self, token: str, name: str = "token") -> Path:
        """A kubeconfig for this cluster that authenticates with a bearer token."""
        cluster = kubeconfig.current_cluster_entry(self.kubeconfig)
        return kubeconfig.write_kubeconfig(self._new_kubeconfig_path(name), cluster, kubeconfig.token_user(token), name)

    def kubeconfig_for_service_account(self, namespace: str, name: str, duration: str = "1h") -> Path:
        """A kubeconfig that acts as an existing ServiceAccount (token from the TokenRequest API)."""
        token = self.kubectl("create", "token", name, "--namespace", namespace, f"--duration={duration}")
        return self.kubeconfig_for_token(token.strip(), name=f"sa-{namespace}-{name}")

    def kubeconfig_for_pod(self, namespace: str, service_account: str, pod: str, duration: str = "1h") -> Path:
        """A kubeconfig with the token a kubelet projects into `pod`: bound to it, so the API
        server adds the pod-name and pod-uid claims to the user's extra info."""
        uid = self.kubectl("get", "pod", pod, "--namespace", namespace, "-o", "jsonpath={.metadata.uid}")
        token = self.kubectl(
            "create", "token", service_account, "--namespace", namespace, f"--duration={duration}",
            "--bound-object-kind=Pod", f"--bound-object-name={pod}", f"--bound-object-uid={uid}",
        )  # fmt: skip
        return self.kubeconfig_for_token(token.strip(), name=f"pod-{namespace}-{pod}")

    def _new_kubeconfig_path(self, name: str) -> Path:
        safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        return self.workdir / "kubeconfigs" / f"{safe_name}-{secrets.token_hex(4)}.yaml"

    @abc.abstractmethod
    def stop(self) -> None:
        """Releases what this object started or created; idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ExistingCluster(Cluster):
    """A cluster that runs elsewhere; nothing is started or stopped, only checked to answer."""

    def __init__(self, kubeconfig_path: Path, bin_dir: Path) -> None:
        if not kubeconfig_path.is_file():
            raise FileNotFoundError(f"{EXISTING_KUBECONFIG_ENV}={kubeconfig_path}: no such file")
        workdir = Path(tempfile.mkdtemp(prefix="saigon-cluster-"))
        super().__init__(kubeconfig_path.resolve(), bin_dir, workdir)
        self._finalizer = weakref.finalize(self, shutil.rmtree, workdir, ignore_errors=True)
        try:
            self.kubectl("get", "--raw", "/readyz", timeout=30)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self._finalizer()


def _shutdown(running: dict[str, subprocess.Popen[bytes]], workdir: Path) -> None:
    """Stops the processes in reverse start order (the API server before its etcd), then
    deletes their data. Runs from `stop()`, garbage collection or interpreter exit."""
    for name in reversed(list(running)):
        processes.terminate(running.pop(name))
    shutil.rmtree(workdir, ignore_errors=True)


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class _PortTakenError(Exception):
    """A port picked as free was taken by someone else before our process bound it."""


class ControlPlane(Cluster):
    """etcd + kube-apiserver started for the lifetime of this object (use `with` or `stop()`).

    The processes run in their own process groups, die with the Python process even if it
    is SIGKILLed, and are stopped by a finalizer at interpreter exit if `stop()` was not called.
    """

    def __init__(
        self,
        bin_dir: Path | None = None,
        startup_timeout: float = 180.0,
        extra_apiserver_args: tuple[str, ...] = (),
        apiserver: Path | None = None,
    ) -> None:
        """`apiserver` runs another kube-apiserver binary (another release) with the same etcd,
        kubectl and helm."""
        workdir = Path(tempfile.mkdtemp(prefix="saigon-controlplane-"))
        super().__init__(workdir / "admin.kubeconfig", bin_dir or find_bin_dir(), workdir)
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._finalizer = weakref.finalize(self, _shutdown, self._running, workdir)
        self._ca = certs.CertificateAuthority()
        self._admin = self._ca.issue_client_cert("saigon-test-admin", ("system:masters",))
        self._pki = workdir / "pki"
        self._pki.mkdir()
        self.log_dir = workdir / "logs"
        self.log_dir.mkdir()
        self.etcd_url = ""
        self._apiserver: tuple[int, tuple[str, ...]] = (0, ())  # port and extra args, for restarts
        self._binaries = {"kube-apiserver": apiserver} if apiserver is not None else {}
        try:
            self._start(startup_timeout, extra_apiserver_args)
        except BaseException:
            self.stop()
            raise

    @property
    def pids(self) -> dict[str, int]:
        """Process ids by binary name, while running."""
        return {name: process.pid for name, process in self._running.items()}

    def stop(self) -> None:
        """Stops etcd and kube-apiserver (SIGTERM, then SIGKILL) and deletes their data; idempotent."""
        self._finalizer()

    def stop_apiserver(self) -> None:
        """Stops kube-apiserver (etcd keeps running and keeps the data); `start_apiserver` brings it back."""
        processes.terminate(self._running.pop("kube-apiserver"))

    def start_apiserver(self, startup_timeout: float = 180.0) -> None:
        """Starts kube-apiserver again on the same port with the same flags."""
        port, extra_args = self._apiserver
        self._start_apiserver(self.etcd_url, port, extra_args, time.monotonic() + startup_timeout)

    def expire_watches(self) -> int:
        """With the API server stopped: moves etcd's revision on (a key outside the API's prefix)
        and compacts its history up to it, so that every watch resuming from a resourceVersion it
        saw before gets 410 Gone. Returns the compacted revision."""
        key = base64.b64encode(b"/saigon-test/expire-watches").decode()
        put = self._etcd_call("/v3/kv/put", {"key": key, "value": base64.b64encode(b"x").decode()})
        revision = int(put["header"]["revision"])
        self._etcd_call("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def _etcd_call(self, path: str, body: dict[str, object]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.etcd_url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.load(response)
            return result

    def kubeconfig_for_user(self, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig that authenticates as `user` in `groups` with a client certificate."""
        pair = self._ca.issue_client_cert(user, groups)
        cluster = kubeconfig.cluster_entry(self.server, self._ca.cert_pem)
        return kubeconfig.write_kubeconfig(
            self._new_kubeconfig_path(user),
            cluster,
            kubeconfig.client_cert_user(pair.cert_pem, pair.key_pem),
            "user",
        )

    def _start(self, startup_timeout: float, extra_apiserver_args: tuple[str, ...]) -> None:
        self._write_pki()
        for attempt in range(3):
            etcd_port, peer_port, api_port = _distinct_free_ports(3)
            try:
                deadline = time.monotonic() + startup_timeout
                self.etcd_url = self._start_etcd(etcd_port, peer_port, deadline)
                self._apiserver = (api_port, extra_apiserver_args)
                self._start_apiserver(self.etcd_url, api_port, extra_apiserver_args, deadline)
                return
            except _PortTakenError:
                if attempt == 2:
                    raise ControlPlaneStartError("no free ports after 3 attempts") from None
                for name in reversed(list(self._running)):
                    processes.terminate(self._running.pop(name))
                shutil.rmtree(self.workdir / "etcd", ignore_errors=True)

    def _write_pki(self) -> None:
        (self._pki / "ca.crt").write_bytes(self._ca.cert_pem)
        serving = self._ca.issue_server_cert(
            dns_names=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            # In-cluster clients reach the API server at the first address of the service range.
            ip_addresses=["127.0.0.1", str(next(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE).hosts()))],
        )
        serving.write(self._pki / "apiserver.crt", self._pki / "apiserver.key")
        self._admin.write(self._pki / "admin.crt", self._pki / "admin.key")
        signing = certs.service_account_signing_keys()
        (self._pki / "sa.pub").write_bytes(signing.public_pem)
        (self._pki / "sa.key").write_bytes(signing.private_pem)
        (self._pki / "sa.key").chmod(0o600)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        binary = self._binaries.get(name, self.bin_dir / name)
        process = processes.spawn([str(binary), *args], self.log_dir / f"{name}.log")
        self._running[name] = process
        return process

    def _start_etcd(self, port: int, peer_port: int, deadline: float) -> str:
        client_url = f"http://127.0.0.1:{port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        process = self._spawn(
            "etcd",
            [
                "--name=saigon-test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=saigon-test={peer_url}",
                # Test data is thrown away: durability costs time and buys nothing.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"{client_url}/health", timeout=2) as response:
                return bool(json.load(response).get("health") == "true")

        self._wait("etcd", process, healthy, deadline)
        return client_url

    def _start_apiserver(self, etcd_url: str, port: int, extra_args: tuple[str, ...], deadline: float) -> None:
        pki = self._pki
        process = self._spawn(
            "kube-apiserver",
            [
                "--advertise-address=127.0.0.1",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--etcd-servers={etcd_url}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=RBAC",
                # No controller-manager creates the `default` ServiceAccounts this plugin
                # would demand of every pod (envtest makes the same choice).
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                # Fewer background loops on small CI machines.
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                *extra_args,
            ],
        )
        server = f"https://127.0.0.1:{port}"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

        def answers(path: str) -> Callable[[], bool]:
            def check() -> bool:
                with urllib.request.urlopen(f"{server}{path}", timeout=5, context=context) as response:
                    return bool(response.status == 200)

            return check

        self._wait("kube-apiserver", process, answers("/readyz"), deadline)
        # The bootstrap controller creates the `default` namespace shortly after readiness.
        self._wait("kube-apiserver", process, answers("/api/v1/namespaces/default"), deadline)
        kubeconfig.write_kubeconfig(
            self.kubeconfig,
            kubeconfig.cluster_entry(server, self._ca.cert_pem),
            kubeconfig.client_cert_user(self._admin.cert_pem, self._admin.key_pem),
            "saigon-test",
        )

    def _wait(self, name: str, process: subprocess.Popen[bytes], ready: Callable[[], bool], deadline: float) -> None:
        log = self.log_dir / f"{name}.log"
        while True:
            if process.poll() is not None:
                tail = _log_tail(log)
                if "address already in use" in tail:
                    raise _PortTakenError(name)
                raise ControlPlaneStartError(f"{name} exited with {process.returncode}; {log}:\n{tail}")
            try:
                if ready():
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ControlPlaneStartError(f"{name} not ready in time; {log}:\n{_log_tail(log)}")
            time.sleep(0.2)


def _distinct_free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(processes.free_port())
    return sorted(ports)


def open_cluster(environ: Mapping[str, str] = os.environ) -> Cluster:
    """The cluster named by ``$SAIGON_TEST_KUBECONFIG`` if set, else a fresh `ControlPlane`."""
    bin_dir = find_bin_dir()
    existing = environ.get(EXISTING_KUBECONFIG_ENV)
    if existing:
        return ExistingCluster(Path(existing), bin_dir)
    return ControlPlane(bin_dir)
