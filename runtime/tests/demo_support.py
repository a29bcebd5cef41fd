"""The demo server as the user runs it: `python -m saigon_runtime.demo.main serve` in a subprocess
on 127.0.0.1, over a private copy of the MINI demo assets (the hot-swap flips links in it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from saigon_runtime.demo import MINI, DemoAssets, build_demo_assets


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(url: str, body: dict[str, object] | None = None, token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@contextmanager
def serve_demo(assets: DemoAssets, tmp_path: Path) -> Iterator[tuple[str, Path, DemoAssets]]:
    """(base URL, the serve log, the served copy of the assets) once the server is ready."""
    cache = tmp_path / "cache"
    shutil.copytree(assets.root, cache / assets.root.name, symlinks=True)
    served_assets = build_demo_assets(cache, scale=MINI, progress=False)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAIGON_")}
    env.update(SAIGON_DEVICE="cpu", OMP_NUM_THREADS="1")
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "saigon_runtime.demo.main", "serve", "--scale", "mini", "--quiet"]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*command, "--cache-dir", str(cache), "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if call(f"{url}/readyz")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        yield url, log, served_assets
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
