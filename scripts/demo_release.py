#!/usr/bin/env python3
"""The demo artifacts a release publishes, and the README's quickstart rendered against them.

    .venv/bin/python scripts/demo_release.py dist/demo --version 0.1.0

builds the demo model and adapters (saigon_runtime.demo.build, no downloads) and writes into OUT:

- `base/`: the demo base model; the release bakes it into the runtime image at DEMO_BASE_PATH;
- `saigon-demo-<adapter>-<version>.tar`: each demo adapter version as the agent fetches it
  (a tar of adapter_config.json and adapter_model.safetensors; mtimes and owners zeroed);
- `SHA256SUMS`: their digests, as `sha256sum -c` reads them;
- `quickstart.yaml`: examples/quickstart.yaml.in with the release's image tag, asset URLs and the
  digests filled in, so a user applies it as is.

The release workflow uploads the tars, SHA256SUMS and quickstart.yaml to the GitHub release.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import shutil
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "examples" / "quickstart.yaml.in"
DEMO_BASE_PATH = "/opt/saigon/demo/base"  # where Dockerfile.runtime puts base/
RELEASE_URL = "https://github.com/saigon-ai/saigon/releases/download/v{version}/{asset}"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
_TOKEN = re.compile(r"@(VERSION|URL|SHA256)(?::([A-Za-z0-9_.-]+))?@")


def asset_name(adapter: str, version: str) -> str:
    return f"saigon-demo-{adapter}-{version}.tar"


def adapter_tar(version_dir: Path) -> bytes:
    """The same bytes for the same files, whoever builds it when."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ADAPTER_FILES:
            data = (version_dir / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def render(template: str, version: str, digests: dict[str, str]) -> str:
    """Fills @VERSION@, @URL:<asset>@ and @SHA256:<asset>@; an unknown asset is an error."""

    def fill(match: re.Match[str]) -> str:
        kind, asset = match[1], match[2]
        if kind == "VERSION":
            return version
        if asset not in digests:
            raise SystemExit(f"{TEMPLATE.name} names {asset}, which this release does not build")
        return digests[asset] if kind == "SHA256" else RELEASE_URL.format(version=version, asset=asset)

    return _TOKEN.sub(fill, template)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--version", required=True, help="the release version, without the v")
    parser.add_argument("--scale", choices=["full", "mini"], default="full", help=argparse.SUPPRESS)  # tests
    parser.add_argument("--cache-dir", type=Path, help="demo build cache (default ~/.cache/saigon)")
    args = parser.parse_args(argv)
    from saigon_runtime.demo.build import FULL, MINI, build_demo_assets
    from saigon_runtime.demo.catalog import DEMO_ADAPTERS

    assets = build_demo_assets(args.cache_dir, scale=FULL if args.scale == "full" else MINI, progress=False)
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.out / "base", ignore_errors=True)
    shutil.copytree(assets.base_model_dir, args.out / "base")
    digests = {}
    for spec in DEMO_ADAPTERS:
        data = adapter_tar(assets.adapters_dir / spec.name / spec.version)
        name = asset_name(spec.name, spec.version)
        (args.out / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    (args.out / "SHA256SUMS").write_text("".join(f"{digest}  {name}\n" for name, digest in sorted(digests.items())))
    (args.out / "quickstart.yaml").write_text(render(TEMPLATE.read_text(), args.version, digests))
    print(f"wrote {len(digests)} adapter archives, SHA256SUMS, quickstart.yaml and base/ to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
