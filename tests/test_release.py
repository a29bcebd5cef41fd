"""Release artifacts: the workflows pass actionlint, the chart README's values table is the one
helm-docs generates from values.yaml, image names agree with what the release workflow
publishes, every package, the chart and the changelog name one version, and every CLI says it.

actionlint and helm-docs are built from the Go module proxy by scripts/go-tools.sh (`make tools`,
part of `make test`)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "saigon"
RELEASE_WORKFLOW = REPO / ".github" / "workflows" / "release.yml"
PACKAGES = ("runtime", "operator", "contract")
CLIS = ("saigon-runtime", "saigon-operator", "saigon-agent")


@pytest.fixture(scope="module")
def go_tools() -> Path:
    bin_dir = Path(
        subprocess.run(
            [str(REPO / "scripts" / "go-tools.sh"), "--print-bin-dir"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    missing = [tool for tool in ("actionlint", "helm-docs") if not (bin_dir / tool).is_file()]
    assert not missing, f"{missing} not built in {bin_dir}: run `make tools` (scripts/go-tools.sh)"
    return bin_dir


def chart_meta() -> dict[str, str]:
    meta: dict[str, str] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return meta


def package_versions() -> dict[str, str]:
    versions = {}
    for folder in PACKAGES:
        pyproject = REPO / folder / "pyproject.toml"
        if pyproject.is_file():
            project = tomllib.loads(pyproject.read_text())["project"]
            versions[project["name"]] = project["version"]
    return versions


def test_workflows_pass_actionlint_with_shellcheck(go_tools: Path) -> None:
    assert shutil.which("shellcheck"), "shellcheck (Debian package) is installed by scripts/system-deps.sh"
    workflows = sorted((REPO / ".github" / "workflows").glob("*.yml"))
    assert {w.name for w in workflows} >= {"ci.yml", "release.yml"}
    result = subprocess.run(
        [str(go_tools / "actionlint"), "-color=false", *map(str, workflows)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(go_tools: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        RELEASE_WORKFLOW.read_text().replace("needs: [check-version, images]", "needs: [check-version, imagez]")
    )
    result = subprocess.run([str(go_tools / "actionlint"), "-color=false", str(broken)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "imagez" in result.stdout


def test_chart_readme_is_what_helm_docs_generates_from_values(go_tools: Path, tmp_path: Path) -> None:
    copy = tmp_path / "charts" / "saigon"
    shutil.copytree(CHART, copy)
    (copy / "README.md").unlink()
    subprocess.run(
        [str(go_tools / "helm-docs"), "-c", str(tmp_path / "charts"), "-s", "file", "--skip-version-footer"],
        check=True,
        capture_output=True,
    )
    generated = (copy / "README.md").read_text()
    assert (CHART / "README.md").read_text() == generated, "charts/saigon/README.md is stale: run `make chart-docs`"


def test_every_value_in_the_chart_readme_has_a_description() -> None:
    table = (CHART / "README.md").read_text().split("## Values", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| Key")]
    assert len(rows) > 40
    undocumented = [row.split("|")[1].strip() for row in rows if not row.rstrip(" |").split("|")[-1].strip()]
    assert undocumented == []


def test_image_names_are_the_ones_the_release_workflow_publishes() -> None:
    workflow = yaml.safe_load(RELEASE_WORKFLOW.read_text())
    env = workflow["env"]
    prefix = f"{env['REGISTRY']}/{env['IMAGE_NAMESPACE']}"
    published = {f"{prefix}/{item['image']}" for item in workflow["jobs"]["images"]["strategy"]["matrix"]["include"]}
    assert published == {f"{prefix}/saigon-operator", f"{prefix}/saigon-runtime"}

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["repository"] in published
    app_version = chart_meta()["appVersion"]
    for example in (REPO / "examples").glob("*.yaml"):
        for doc in yaml.safe_load_all(example.read_text()):
            image = (doc or {}).get("spec", {}).get("image")
            if image:
                name, _, tag = image.rpartition(":")
                assert name in published, f"{example.name}: {image} is not an image the release publishes"
                assert tag == app_version, f"{example.name}: {image} is not the chart's appVersion {app_version}"
    assert env["CHART_REPOSITORY"] == f"oci://{prefix}/charts"
    assert f"oci://{prefix}/charts/saigon" in (CHART / "README.md").read_text()


def test_packages_chart_and_changelog_name_one_semver_version() -> None:
    versions = package_versions()
    assert set(versions) >= {"saigon-runtime", "saigon-operator"}
    meta = chart_meta()
    everyone = {*versions.values(), meta["version"], meta["appVersion"]}
    assert len(everyone) == 1, f"versions disagree: {versions}, chart {meta['version']}/{meta['appVersion']}"
    (version,) = everyone
    assert re.fullmatch(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?", version)
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert f"## [{version}]" in changelog
    assert changelog.index("## [Unreleased]") < changelog.index(f"## [{version}]")


@pytest.mark.parametrize("cli", CLIS)
def test_every_cli_prints_its_version(cli: str) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / cli), "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{cli} {chart_meta()['appVersion']}"


def test_license_is_apache_2() -> None:
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
