"""Warm restarts: the device-resident ("hot") adapters, and which are pinned, are recorded at
shutdown and preloaded at start, before the runtime reports Ready.

The record is the `hotset_file` setting (SAIGON_HOTSET_FILE), by default
`<adapters_dir>/.saigon-hotset.json`. In a pod the adapters volume belongs to the agent and is
read-only here, so the operator points the setting at a writable volume that outlives
container restarts.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from saigon_contract.names import is_version

from saigon_runtime.adapters.manager import AdapterManager
from saigon_runtime.adapters.names import is_name
from saigon_runtime.adapters.types import AdapterRef
from saigon_runtime.errors import EngineError
from saigon_runtime.redact import shown

HOTSET_FILE = ".saigon-hotset.json"
log = logging.getLogger(__name__)


def save_hot_set(manager: AdapterManager, path: Path | None = None) -> Path | None:
    """Write the device-resident adapters, most recently used last; returns the file written."""
    if path is None:
        if manager.store is None:
            return None
        path = manager.store.root / HOTSET_FILE
    entries = [{"name": n, "version": v, "pinned": manager.pool.pinned(n)} for n, v in manager.pool.resident()]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-hotset-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump({"adapters": entries}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_hot_set(manager: AdapterManager, path: Path | None = None) -> list[AdapterRef]:
    """Preload the recorded adapters into device slots; unreadable or stale entries are skipped."""
    if path is None:
        if manager.store is None:
            return []
        path = manager.store.root / HOTSET_FILE
    try:
        entries = json.loads(path.read_text())["adapters"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    loaded: list[AdapterRef] = []
    for entry in entries[-manager.pool.capacity :] if isinstance(entries, list) else []:
        name, version = entry.get("name"), entry.get("version")
        if not (isinstance(name, str) and isinstance(version, str) and is_name(name) and is_version(version)):
            continue
        ref = AdapterRef(name, version)
        try:
            if manager.pool.warm(manager.host_adapter(ref)):
                loaded.append(ref)
            if entry.get("pinned"):
                manager.pool.pin(name, True)
        except EngineError as exc:
            log.info("hot set entry %s@%s skipped: %s", shown(name), version, type(exc).__name__)
    return loaded
