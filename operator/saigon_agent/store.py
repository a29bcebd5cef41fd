"""The agent's side of the adapters directory shared with the runtime (layout: saigon_contract.layout).

A version directory appears only by an atomic rename of a complete, verified staging
directory (`<root>/<name>/.staging-*`), so the runtime never sees a half-written
version. Each version records its digest in `.saigon-digest`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from saigon_contract import layout
from saigon_contract.names import ACTIVE_LINK, check_adapter_name, check_version

from saigon_agent.artifact import fsync_tree, remove_tree
from saigon_agent.errors import VersionConflict

DIGEST_FILE = ".saigon-digest"
_STAGING = ".staging-"


class AdapterStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def adapter_dir(self, name: str) -> Path:
        return self.root / check_adapter_name(name)

    def version_dir(self, name: str, version: str) -> Path:
        return self.adapter_dir(name) / check_version(version)

    def stage(self, name: str, version: str) -> Path:
        """A fresh private directory to assemble a version in."""
        parent = self.adapter_dir(name)
        parent.mkdir(parents=True, exist_ok=True)
        path = parent / f"{_STAGING}{check_version(version)}-{secrets.token_hex(4)}"
        path.mkdir(mode=0o750)
        return path

    def installed_digest(self, name: str, version: str) -> str | None:
        try:
            return (self.version_dir(name, version) / DIGEST_FILE).read_text().strip() or None
        except (FileNotFoundError, NotADirectoryError):
            return None

    def commit(self, name: str, version: str, staging: Path, digest: str) -> Path:
        """Publishes a verified staging directory as `<name>/<version>` (atomic, durable)."""
        (staging / DIGEST_FILE).write_text(digest + "\n")
        fsync_tree(staging)
        final = self.version_dir(name, version)
        try:
            os.rename(staging, final)
        except OSError:
            # Already there (versions are immutable): fine if it is the same artifact.
            existing = self.installed_digest(name, version)
            remove_tree(staging)
            if existing != digest:
                raise VersionConflict(
                    f"version {version} is already on disk with digest {existing}, not {digest}"
                ) from None
            return final
        layout.fsync_dir(final.parent)
        return final

    def activate(self, name: str, version: str) -> None:
        """Points `<name>/active` at `version`, atomically."""
        layout.set_active(self.adapter_dir(name), check_version(version))

    def deactivate(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.adapter_dir(name) / ACTIVE_LINK)

    def active_version(self, name: str) -> str | None:
        return layout.active_version(self.adapter_dir(name))

    def versions(self, name: str) -> list[str]:
        return layout.versions(self.adapter_dir(name))

    def prune(self, name: str, keep: set[str]) -> None:
        """Removes versions of `name` not in `keep` (never the active one)."""
        active = self.active_version(name)
        for version in self.versions(name):
            if version not in keep and version != active:
                remove_tree(self.adapter_dir(name) / version)

    def drop_if_empty(self, name: str) -> None:
        """Removes `<name>/` when nothing is in it (a failed first install), so readers do not list it."""
        with contextlib.suppress(FileNotFoundError, OSError):
            self.adapter_dir(name).rmdir()

    def remove_version(self, name: str, version: str) -> None:
        remove_tree(self.version_dir(name, version))

    def remove(self, name: str) -> None:
        """Removes the adapter: `active` first (so nothing points at a vanishing version), then all files."""
        parent = self.adapter_dir(name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(parent / ACTIVE_LINK)
        remove_tree(parent)

    def has(self, name: str) -> bool:
        """Files exist for this adapter (a valid name only: anything else is not ours)."""
        try:
            return self.adapter_dir(name).is_dir()
        except ValueError:
            return False

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        out = []
        for entry in self.root.iterdir():
            try:
                out.append(check_adapter_name(entry.name))
            except ValueError:
                continue
        return sorted(out)

    def clean_staging(self) -> int:
        """Removes staging leftovers of an agent that died mid-write. Returns how many."""
        removed = 0
        for name in self.names():
            for entry in self.adapter_dir(name).iterdir():
                if entry.name.startswith((_STAGING, layout.TMP_ACTIVE_PREFIX)):
                    if entry.is_symlink():
                        entry.unlink()
                    else:
                        remove_tree(entry)
                    removed += 1
        return removed
