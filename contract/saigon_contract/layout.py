"""The adapters directory the agent writes and the runtime reads: one reader, one writer.

    <root>/<name>/<version>/adapter_config.json + adapter_model.safetensors
    <root>/<name>/active -> <version>        (a relative symlink, flipped atomically)

Versions are immutable and appear only by renaming a complete directory into place;
names beginning with "." are private to the writer (staging, temporary links).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from saigon_contract.names import ACTIVE_LINK, is_version

TMP_ACTIVE_PREFIX = ".active-"


def active_version(adapter_dir: Path) -> str | None:
    """The version `<adapter_dir>/active` points at, or None.

    Only a bare version name is followed: an absolute or nested target (which could
    escape the adapter directory), a name that is not a version, or a link to nothing
    reads as no active version.
    """
    try:
        target = os.readlink(adapter_dir / ACTIVE_LINK)
    except OSError:
        return None
    if not is_version(target):
        return None
    version = adapter_dir / target
    return target if version.is_dir() and not version.is_symlink() else None


def versions(adapter_dir: Path) -> list[str]:
    """The complete versions on disk (directories with a version's name, never links)."""
    try:
        entries = list(adapter_dir.iterdir())
    except OSError:
        return []
    return sorted(p.name for p in entries if is_version(p.name) and p.is_dir() and not p.is_symlink())


def set_active(adapter_dir: Path, version: str) -> None:
    """Points `<adapter_dir>/active` at `version`, atomically (a new link renamed over the old one)."""
    if not is_version(version):
        raise ValueError(f"not a version: {version!r}")
    tmp = adapter_dir / f"{TMP_ACTIVE_PREFIX}{secrets.token_hex(4)}"
    os.symlink(version, tmp)
    try:
        os.replace(tmp, adapter_dir / ACTIVE_LINK)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(adapter_dir)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
