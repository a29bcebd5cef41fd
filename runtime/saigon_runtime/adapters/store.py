"""The runtime's view of the adapters directory (layout: saigon_contract.layout), plus
`<root>/domains.json` (optional {"<user id>": "<domain>"} for the cascade).

Versions are immutable: a new version is written to a temporary directory beside its
final place, checked, then renamed; readers never see half a version.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from saigon_contract import layout

from saigon_runtime.adapters.format import CONFIG_FILE, WEIGHTS_FILE, file_digest, read_config
from saigon_runtime.adapters.names import check_name, check_version, is_name
from saigon_runtime.errors import AdapterNotFound, AdapterRejected, InvalidRequest

DOMAINS_FILE = "domains.json"
_TMP_PREFIX = ".tmp-"


class AdapterStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._domains: tuple[float, dict[str, str]] | None = None
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and is_name(p.name))

    def versions(self, name: str) -> list[str]:
        return layout.versions(self.root / check_name(name))

    def active_version(self, name: str) -> str | None:
        return layout.active_version(self.root / check_name(name))

    def version_path(self, name: str, version: str) -> Path:
        path = self.root / check_name(name) / check_version(version)
        if path.parent.is_symlink() or path.is_symlink():
            raise AdapterRejected(
                f"adapter {name!r} version {version!r} is behind a symbolic link; "
                "adapters must be directories inside the adapters directory"
            )
        if not path.is_dir():
            raise AdapterNotFound(f"adapter {name!r} has no version {version!r}")
        return path

    def exists(self, name: str) -> bool:
        return (self.root / check_name(name)).is_dir()

    def import_version(self, name: str, source: Path, version: str | None = None) -> str:
        """Copy an adapter directory in as a new immutable version; returns the version."""
        check_name(name)
        for fname in (CONFIG_FILE, WEIGHTS_FILE):
            if (source / fname).is_symlink():
                raise AdapterRejected(f"adapter {name!r} refused: {fname} is a symbolic link")
        read_config(source, name)
        weights = source / WEIGHTS_FILE
        if not weights.is_file():
            raise InvalidRequest(f"{source} has no {WEIGHTS_FILE}")
        version = check_version(version or file_digest(weights)[:12])
        final = self.root / name / version
        if final.is_dir():
            return version  # versions are immutable: same name and version, same content
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=final.parent))
        try:
            for fname in (CONFIG_FILE, WEIGHTS_FILE):
                shutil.copyfile(source / fname, tmp / fname)
                _fsync(tmp / fname)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return version

    def set_active(self, name: str, version: str) -> None:
        self.version_path(name, version)
        layout.set_active(self.root / name, version)

    def remove_version(self, name: str, version: str) -> None:
        if self.active_version(name) == version:
            raise InvalidRequest(f"version {version!r} of {name!r} is active and cannot be removed")
        shutil.rmtree(self.version_path(name, version))

    def domain_of(self, user_id: str) -> str | None:
        path = self.root / DOMAINS_FILE
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        with self._lock:
            if self._domains is None or self._domains[0] != mtime:
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    data = {}
                mapping = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
                self._domains = (mtime, mapping)
            return self._domains[1].get(user_id)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def within(source: Path, roots: Iterable[Path]) -> Path | None:
    """`source` with every link resolved, if it lies inside one of `roots` (also resolved); else None."""
    resolved = source.resolve()
    for root in roots:
        if resolved.is_relative_to(root.resolve()):
            return resolved
    return None
