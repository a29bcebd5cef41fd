"""The README's walk-through applies only what a release publishes: the quickstart.yaml that
scripts/demo_release.py renders (the release workflow runs it and uploads its output), naming
the runtime image the workflow pushes and the demo adapter archives it uploads, with their real
sha256. Built here at the demo's test scale; checked for placeholders, against the agent's own
archive reader and with a server-side dry run on the real API server."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from controlplane.cluster import Cluster
from saigon_agent import artifact
from saigon_chart import CHART
from saigon_e2e.world import install_crds

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "demo_release.py"
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
PLACEHOLDERS = re.compile(r"example\.com|@[A-Z0-9]+(:[^@]*)?@|\.\.\.|<[a-z -]+>|changeme|TODO", re.IGNORECASE)


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_release", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out, cache = tmp_path_factory.mktemp("release"), tmp_path_factory.mktemp("demo-cache")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), "--version", APP_VERSION, "--scale", "mini", "--cache-dir", str(cache)],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_the_quickstart_names_published_artifacts_with_their_real_digests(release: Path) -> None:
    text = (release / "quickstart.yaml").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not PLACEHOLDERS.search(body), PLACEHOLDERS.search(body)
    model, adapter = documents(release / "quickstart.yaml")
    assert model["kind"] == "SaigonModel" and adapter["kind"] == "SaigonAdapter"
    # The image the release workflow pushes, at this release's tag, with the demo base model in it.
    assert model["spec"]["image"] == f"ghcr.io/saigon-ai/saigon-runtime:{APP_VERSION}"
    assert model["spec"]["baseModel"] == {"path": script().DEMO_BASE_PATH}
    assert adapter["spec"]["modelRef"]["name"] == model["metadata"]["name"]
    url = adapter["spec"]["source"]["https"]["url"]
    prefix = f"https://github.com/saigon-ai/saigon/releases/download/v{APP_VERSION}/"
    assert url.startswith(prefix)
    archive = release / url.removeprefix(prefix)
    assert adapter["spec"]["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    sums = dict(reversed(line.split("  ")) for line in (release / "SHA256SUMS").read_text().splitlines())
    assert sums[archive.name] == adapter["spec"]["sha256"]
    assert sorted(sums) == sorted(p.name for p in release.glob("saigon-demo-*.tar"))


def test_the_agent_accepts_every_published_archive(release: Path, tmp_path: Path) -> None:
    for archive in sorted(release.glob("saigon-demo-*.tar")):
        dest = tmp_path / archive.stem
        dest.mkdir()
        artifact.unpack(archive, dest, max_bytes=64 * 1024 * 1024)
        artifact.validate(dest)
    # Rebuilt from the same files, an archive has the same bytes (its digest is its identity).
    again = script().adapter_tar(tmp_path / "saigon-demo-user_alice-v1")
    assert again == (release / "saigon-demo-user_alice-v1.tar").read_bytes()
    assert (release / "base" / "config.json").is_file()


def test_the_quickstart_passes_a_strict_server_side_dry_run(release: Path, k8s_cluster: Cluster) -> None:
    install_crds(k8s_cluster)
    namespace = f"quickstart-{hashlib.sha256(str(release).encode()).hexdigest()[:6]}"
    k8s_cluster.kubectl("create", "namespace", namespace)
    out = k8s_cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "--validate=strict", "-n", namespace,
        "-f", str(release / "quickstart.yaml"),
    )  # fmt: skip
    assert out.count("serverside-applied (server dry run)") == 2, out


def test_the_release_publishes_what_the_quickstart_and_the_image_need() -> None:
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "release.yml").read_text())
    jobs = workflow["jobs"]
    demo_run = "\n".join(step.get("run", "") for step in jobs["demo"]["steps"])
    assert 'scripts/demo_release.py dist/demo --version "${VERSION}"' in demo_run
    build = next(s for s in jobs["images"]["steps"] if s.get("uses", "").startswith("docker/build-push-action"))
    assert build["with"]["build-contexts"] == "demo=dist/demo/base"
    uploads = "\n".join(step.get("run", "") for step in jobs["github-release"]["steps"])
    for asset in ("dist/demo/quickstart.yaml", "dist/demo/SHA256SUMS", "dist/demo/saigon-demo-*.tar"):
        assert asset in uploads
    dockerfile = (REPO / "Dockerfile.runtime").read_text()
    assert f"COPY --from=demo / {script().DEMO_BASE_PATH}/" in dockerfile


def test_the_readme_walk_through_uses_only_published_artifacts() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### From an empty cluster to a served adapter", 1)[1].split("\n### ", 1)[0]
    commands = "\n".join(re.findall(r"```bash\n(.*?)```", section, re.DOTALL))
    assert "helm install saigon oci://ghcr.io/saigon-ai/charts/saigon" in commands
    assert "releases/download/v${SAIGON_VERSION}/quickstart.yaml" in commands
    assert "examples/" not in commands and "charts/saigon" not in commands.replace("charts/saigon --version", "")
    assert not re.search(r"example\.com|<[a-z -]+>", commands)
