"""Per-user mesh files on disk: validated reads cached until the file changes, atomic writes."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saigon_contract.layout import fsync_dir

from saigon_runtime.mesh.schema import (
    MAX_MESH_BYTES,
    InvalidUserId,
    MeshGraph,
    MeshTooLarge,
    MeshValidationError,
    parse_mesh,
    validate_user_id,
)

MESH_FILE_PREFIX = "user_"
MESH_FILE_SUFFIX = "_mesh.json"

# (device, inode, size, mtime): a new inode covers os.replace and Kubernetes ConfigMap
# symlink swaps; size and mtime cover writes in place.
_Signature = tuple[int, int, int, int]


@dataclass(frozen=True)
class _Entry:
    signature: _Signature
    graph: MeshGraph | None
    error: MeshValidationError | None


class MeshStore:
    """Thread-safe access to `mesh_dir/user_<id>_mesh.json` files.

    `get` re-reads a file only when its signature changed; an invalid file's error is
    cached the same way, so a broken file costs one parse, not one per request.
    """

    def __init__(self, mesh_dir: Path | str, *, max_bytes: int = MAX_MESH_BYTES, max_cached: int = 1024):
        self.mesh_dir = Path(mesh_dir)
        self.max_bytes = max_bytes
        self.max_cached = max_cached
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def path_for(self, user_id: str) -> Path:
        return self.mesh_dir / f"{MESH_FILE_PREFIX}{validate_user_id(user_id)}{MESH_FILE_SUFFIX}"

    def get(self, user_id: str) -> MeshGraph | None:
        """The user's validated graph, or None when the user has no mesh file.

        Raises InvalidUserId for an unsafe id and MeshValidationError for a bad file.
        """
        path = self.path_for(user_id)
        try:
            signature = _signature(os.stat(path))
        except FileNotFoundError:
            self._forget(user_id)
            return None
        with self._lock:
            entry = self._cache.get(user_id)
            if entry is not None and entry.signature == signature:
                self._cache.move_to_end(user_id)
                return _unwrap(entry)
        try:
            entry = self._read(path)
        except FileNotFoundError:
            self._forget(user_id)
            return None
        self._remember(user_id, entry)
        return _unwrap(entry)

    def put(self, user_id: str, data: str | bytes | dict[str, Any] | MeshGraph) -> MeshGraph:
        """Validate `data` and replace the user's mesh file atomically; returns the stored graph."""
        path = self.path_for(user_id)
        graph = parse_mesh(data, max_bytes=self.max_bytes)
        payload = graph.model_dump_json().encode()
        if len(payload) > self.max_bytes:
            raise MeshTooLarge(f"mesh is {len(payload)} bytes once normalised; the limit is {self.max_bytes}")
        self.mesh_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.mesh_dir, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(payload)
                tmp.flush()
                os.fchmod(tmp.fileno(), 0o640)
                os.fsync(tmp.fileno())
                # Taken from our own file before the rename, so a concurrent put cannot
                # pair this graph with the other writer's file.
                signature = _signature(os.fstat(tmp.fileno()))
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        fsync_dir(self.mesh_dir)
        self._remember(user_id, _Entry(signature, graph, None))
        return graph

    def delete(self, user_id: str) -> bool:
        """Remove the user's mesh file; False when there was none."""
        path = self.path_for(user_id)
        self._forget(user_id)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(self.mesh_dir)
        return True

    def user_ids(self) -> list[str]:
        """Ids of the users with a mesh file (names that are not valid user ids are ignored)."""
        if not self.mesh_dir.is_dir():
            return []
        ids = []
        for path in self.mesh_dir.glob(f"{MESH_FILE_PREFIX}*{MESH_FILE_SUFFIX}"):
            candidate = path.name[len(MESH_FILE_PREFIX) : -len(MESH_FILE_SUFFIX)]
            with contextlib.suppress(InvalidUserId):
                ids.append(validate_user_id(candidate))
        return sorted(ids)

    def _read(self, path: Path) -> _Entry:
        # O_NONBLOCK: a FIFO planted in the directory must not hang the reader.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            signature = _signature(info)
            if not stat.S_ISREG(info.st_mode):
                return _Entry(signature, None, MeshValidationError(f"{path.name} is not a regular file"))
            if info.st_size > self.max_bytes:
                return _Entry(signature, None, _too_large(path, info.st_size, self.max_bytes))
            raw = f.read(self.max_bytes + 1)
        if len(raw) > self.max_bytes:
            return _Entry(signature, None, _too_large(path, len(raw), self.max_bytes))
        try:
            return _Entry(signature, parse_mesh(raw, max_bytes=self.max_bytes), None)
        except MeshValidationError as exc:
            return _Entry(signature, None, type(exc)(f"{path.name}: {exc}"))

    def _remember(self, user_id: str, entry: _Entry) -> None:
        with self._lock:
            self._cache[user_id] = entry
            self._cache.move_to_end(user_id)
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)

    def _forget(self, user_id: str) -> None:
        with self._lock:
            self._cache.pop(user_id, None)


def _unwrap(entry: _Entry) -> MeshGraph:
    if entry.error is not None:
        # A fresh exception per call: one shared instance would collect tracebacks across threads.
        raise type(entry.error)(str(entry.error))
    assert entry.graph is not None
    return entry.graph


def _signature(info: os.stat_result) -> _Signature:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _too_large(path: Path, size: int, limit: int) -> MeshTooLarge:
    return MeshTooLarge(f"{path.name} is {size} bytes; the limit is {limit}")
