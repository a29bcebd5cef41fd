"""Adapter artifacts: unpacking a tar archive safely, checking the files, and digests.

An artifact is a tar archive (plain or gzip) whose members include
`adapter_config.json` and `adapter_model.safetensors`, at the top level or inside
one directory. Only those files are ever written; links, devices and any other
member are skipped, and pickle formats are never unpacked.

Digests: for an archive, the sha256 of its bytes. For a directory (a pvc path or a
Hugging Face revision), the sha256 of a manifest listing each adapter file's
sha256 and name in `sha256sum` form, sorted by name; `saigon-agent digest PATH`
prints either.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tarfile
import zlib
from pathlib import Path

import pydantic_core
from saigon_contract.layout import fsync_dir

from saigon_agent.errors import InvalidArtifact, TooLarge

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE)
MAX_CONFIG_BYTES = 1 << 20
MAX_SAFETENSORS_HEADER = 100 << 20
# An adapter archive needs two files; a few more (README, tokenizer files) are skipped. Past this
# many members, reading the index alone costs time and memory: refused.
MAX_ARCHIVE_MEMBERS = 1000
_CHUNK = 1 << 20


class TooDeep(ValueError):
    pass


def bounded_json(raw: bytes) -> object:
    """Parse JSON with nesting bounded by the parser (jiter: 200 levels), so hostile nesting is a
    ValueError, i.e. a permanent InvalidArtifact, never a RecursionError retried as transient."""
    try:
        return pydantic_core.from_json(raw)
    except ValueError as exc:
        if "recursion limit" in str(exc):
            raise TooDeep("it nests too deeply") from None
        raise


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_digest(file_digests: dict[str, str]) -> str:
    """sha256 of `sha256sum`-style lines ("<hex>  <name>\\n"), sorted by name."""
    lines = "".join(f"{file_digests[name]}  {name}\n" for name in sorted(file_digests))
    return hashlib.sha256(lines.encode()).hexdigest()


def directory_digest(directory: Path) -> str:
    return manifest_digest({name: file_sha256(directory / name) for name in ADAPTER_FILES})


def path_digest(path: Path) -> str:
    """The digest a SaigonAdapter's sha256 must carry for this archive or directory."""
    return directory_digest(path) if path.is_dir() else file_sha256(path)


def _member_target(name: str) -> str | None:
    """The adapter file a member maps to, if any: `x`, `./x` or `<dir>/x` for x in ADAPTER_FILES."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or len(parts) > 2 or ".." in parts:
        return None
    return parts[-1] if parts[-1] in ADAPTER_FILES else None


def unpack(archive: Path, dest: Path, *, max_bytes: int) -> None:
    """Writes the adapter files of `archive` into `dest` (an existing empty directory)."""
    written: set[str] = set()
    total = 0
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_ARCHIVE_MEMBERS:
                    raise InvalidArtifact(f"the archive holds more than {MAX_ARCHIVE_MEMBERS} members")
                target = _member_target(member.name)
                if target is None:
                    continue
                if not member.isreg():
                    raise InvalidArtifact(f"{member.name} in the archive is not a regular file")
                if target in written:
                    raise InvalidArtifact(f"the archive holds {target} more than once")
                total += member.size
                if total > max_bytes:
                    raise TooLarge(f"archive unpacks to more than {max_bytes} bytes")
                source = tar.extractfile(member)
                if source is None:
                    raise InvalidArtifact(f"cannot read {member.name} from the archive")
                _copy_stream(source, dest / target, limit=member.size)
                written.add(target)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise InvalidArtifact(f"not a readable tar archive: {exc}") from None
    except OSError as exc:
        if exc.errno:  # a real I/O failure (disk full...), not a corrupt archive
            raise
        raise InvalidArtifact(f"not a readable tar archive: {exc}") from None
    missing = [name for name in ADAPTER_FILES if name not in written]
    if missing:
        raise InvalidArtifact(f"the archive lacks {', '.join(missing)}")


def copy_directory(source: Path, dest: Path, *, max_bytes: int) -> str:
    """Copies the adapter files from a directory; returns their manifest digest."""
    digests: dict[str, str] = {}
    total = 0
    for name in ADAPTER_FILES:
        path = source / name
        if path.is_symlink() or not path.is_file():
            raise InvalidArtifact(f"{name} is missing or not a regular file")
        total += path.stat().st_size
        if total > max_bytes:
            raise TooLarge(f"adapter files exceed {max_bytes} bytes")
        digests[name] = _copy_file(path, dest / name)
    return manifest_digest(digests)


def _copy_stream(source: object, dest: Path, *, limit: int) -> None:
    read = source.read  # type: ignore[attr-defined]
    copied = 0
    with dest.open("wb") as out:
        while chunk := read(_CHUNK):
            copied += len(chunk)
            if copied > limit:
                raise InvalidArtifact(f"{dest.name} is longer than its archive header says")
            out.write(chunk)


def _copy_file(source: Path, dest: Path) -> str:
    digest = hashlib.sha256()
    with source.open("rb") as src, dest.open("wb") as out:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def validate(directory: Path) -> None:
    """Cheap structural checks so a corrupt artifact fails here, with a precise message."""
    config_path = directory / CONFIG_FILE
    if config_path.stat().st_size > MAX_CONFIG_BYTES:
        raise InvalidArtifact(f"{CONFIG_FILE} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = bounded_json(config_path.read_bytes())
    except TooDeep as exc:
        raise InvalidArtifact(f"{CONFIG_FILE} is refused: {exc}") from None
    except ValueError as exc:
        raise InvalidArtifact(f"{CONFIG_FILE} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise InvalidArtifact(f"{CONFIG_FILE} must hold a JSON object")
    peft_type = config.get("peft_type")
    if peft_type is not None and str(peft_type).upper() != "LORA":
        raise InvalidArtifact(f"{CONFIG_FILE} declares peft_type {peft_type!r}; only LORA adapters are served")
    validate_safetensors(directory / WEIGHTS_FILE)


def validate_safetensors(path: Path) -> None:
    """Header checks of a safetensors file: length, JSON, every tensor's offsets inside the data."""
    name = path.name
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise InvalidArtifact(f"{name} is truncated")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(MAX_SAFETENSORS_HEADER, size - 8):
            raise InvalidArtifact(f"{name} has an impossible header length")
        try:
            header = bounded_json(f.read(header_len))
        except ValueError:
            raise InvalidArtifact(f"{name} has a corrupt header") from None
    if not isinstance(header, dict):
        raise InvalidArtifact(f"{name} has a corrupt header")
    data_len = size - 8 - header_len
    tensors = 0
    for tensor, info in header.items():
        if tensor == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1] <= data_len):
            raise InvalidArtifact(f"{name}: tensor {tensor!r} points outside the file")
        tensors += 1
    if tensors == 0:
        raise InvalidArtifact(f"{name} holds no tensors")


def fsync_tree(directory: Path) -> None:
    """Flushes every file under `directory` (subdirectories included) and the directory itself."""
    for entry in directory.rglob("*"):
        if entry.is_file() and not entry.is_symlink():
            fd = os.open(entry, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(directory)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
