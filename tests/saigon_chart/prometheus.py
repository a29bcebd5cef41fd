"""A real Prometheus (Debian's `prometheus` binary) on a free 127.0.0.1 port, for the tests.

Scrapes every second; the runtime targets come from a file (file_sd) that the test rewrites
as pods come and go, with the labels the chart's PodMonitor would give them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from controlplane.processes import free_port, spawn, terminate


class PrometheusError(RuntimeError):
    pass


class Prometheus:
    def __init__(
        self,
        workdir: Path,
        *,
        static_jobs: Mapping[str, list[tuple[str, dict[str, str]]]],
        file_sd_jobs: tuple[str, ...] = (),
        rule_groups: list[dict[str, Any]] | None = None,
    ) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise PrometheusError("prometheus is not installed: run scripts/system-deps.sh")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        scrape_configs: list[dict[str, Any]] = [
            {"job_name": job, "static_configs": [{"targets": [t], "labels": labels} for t, labels in targets]}
            for job, targets in static_jobs.items()
        ]
        for job in file_sd_jobs:
            self.set_targets(job, [])
            scrape_configs.append(
                {"job_name": job, "file_sd_configs": [{"files": [str(self._sd_file(job))], "refresh_interval": "1s"}]}
            )
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "scrape_configs": scrape_configs,
        }
        if rule_groups is not None:
            (workdir / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups}))
            config["rule_files"] = [str(workdir / "rules.yaml")]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = spawn(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            workdir / "prometheus.log",
        )
        self._wait_ready()

    def _sd_file(self, job: str) -> Path:
        return self.workdir / f"{job}.targets.json"

    def set_targets(self, job: str, targets: list[tuple[str, dict[str, str]]]) -> None:
        path = self._sd_file(job)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [t], "labels": labels} for t, labels in targets]))
        tmp.replace(path)  # atomically: Prometheus never reads half a file

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise PrometheusError(f"prometheus not ready in {timeout}s:\n{self.log()[-3000:]}")

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise PrometheusError(f"{expr!r} returned nothing for {timeout}s; targets: {self.targets()}")
            time.sleep(0.5)

    def targets(self) -> list[dict[str, Any]]:
        return [
            {k: t.get(k) for k in ("labels", "health", "lastError")}
            for t in self.api("targets", state="active")["activeTargets"]
        ]

    def log(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process, grace_seconds=10)
            self.process = None
