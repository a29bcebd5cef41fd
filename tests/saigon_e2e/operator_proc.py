"""The real operator (`saigon-operator run`) as a subprocess of the test."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from controlplane.cluster import Cluster
from controlplane.processes import free_port, spawn, terminate

VENV_BIN = Path(sys.executable).parent


class OperatorProcess:
    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        log_dir: Path,
        *,
        lease_duration: float = 3.0,
        unload_timeout: float = 60.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.log_path = log_dir / "operator.log"
        self.lease_duration = lease_duration
        self.unload_timeout = unload_timeout
        self.extra_args = tuple(extra_args)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.kubeconfig: Path = cluster.kubeconfig  # whose credentials the operator uses

    def start(self) -> OperatorProcess:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        self.process = spawn(
            [
                str(VENV_BIN / "saigon-operator"),
                "run",
                "--namespace", self.namespace,
                "--agent-image", "saigon/operator:test",
                "--http-host", "127.0.0.1",
                "--http-port", str(self.port),
                "--lease-namespace", self.namespace,
                "--lease-duration", str(self.lease_duration),
                "--unload-timeout", str(self.unload_timeout),
                *self.extra_args,
            ],
            self.log_path,
            env=env,
        )  # fmt: skip
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, the Lease stays held until it expires."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        terminate(self.process, grace_seconds=30)
        return self.process.returncode

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name):
                continue
            match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
            if not match or match.group(1) != name:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(match.group(3))
        return total

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_leading(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.metric("saigon_operator_leader") == 1.0:
                    return
            except (urllib.error.URLError, OSError):
                pass
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"operator exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"operator did not lead within {timeout}s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
