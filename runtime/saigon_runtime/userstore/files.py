"""The embedded user store: the original on-disk layout, for one machine (or one shared volume).

<mesh_dir>/user_<id>_mesh.json     one graph per user (MeshStore: validated, atomic writes)
<domains_file>                     {"<user id>": "<domain>"} (default <mesh_dir>/domains.json)
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path

from saigon_runtime.mesh.schema import MeshGraph, validate_user_id
from saigon_runtime.mesh.store import MeshStore
from saigon_runtime.userstore.base import MeshInput, validate_domain

DOMAINS_FILE = "domains.json"
MAX_DOMAINS_BYTES = 16 << 20


class FileUserStore:
    kind = "files"

    def __init__(self, mesh_dir: Path | str, domains_file: Path | str | None = None) -> None:
        self.meshes = MeshStore(mesh_dir)
        self.domains_file = Path(domains_file) if domains_file is not None else Path(mesh_dir) / DOMAINS_FILE
        self._lock = threading.Lock()
        self._domains: tuple[tuple[int, int, int], dict[str, str]] | None = None

    def get_mesh(self, user_id: str) -> MeshGraph | None:
        return self.meshes.get(user_id)

    def put_mesh(self, user_id: str, data: MeshInput) -> MeshGraph:
        return self.meshes.put(user_id, data)

    def delete_mesh(self, user_id: str) -> bool:
        return self.meshes.delete(user_id)

    def domain_of(self, user_id: str) -> str | None:
        return self._read_domains().get(validate_user_id(user_id))

    def set_domain(self, user_id: str, domain: str | None) -> None:
        validate_user_id(user_id)
        if domain is not None:
            validate_domain(domain)
        with self._lock:  # read-modify-write of one file: one writer at a time in this process
            mapping = dict(self._read_domains())
            if domain is None:
                mapping.pop(user_id, None)
            else:
                mapping[user_id] = domain
            _write_atomically(self.domains_file, json.dumps(mapping, sort_keys=True).encode())

    def close(self) -> None:
        return None

    def _read_domains(self) -> dict[str, str]:
        try:
            info = os.stat(self.domains_file)
        except FileNotFoundError:
            return {}
        signature = (info.st_ino, info.st_size, info.st_mtime_ns)
        cached = self._domains
        if cached is not None and cached[0] == signature:
            return cached[1]
        mapping: dict[str, str] = {}
        if info.st_size <= MAX_DOMAINS_BYTES:
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(self.domains_file.read_bytes())
                if isinstance(data, dict):
                    # Entries that are not safe ids are skipped, never served as a domain name.
                    mapping = {
                        k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str) and _safe(k, v)
                    }
        self._domains = (signature, mapping)
        return mapping


def _safe(user_id: str, domain: str) -> bool:
    try:
        validate_user_id(user_id)
        validate_domain(domain)
    except ValueError:
        return False
    return True


def _write_atomically(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(payload)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
