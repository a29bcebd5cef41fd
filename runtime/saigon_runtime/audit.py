"""The inference audit log: one JSON line per request, in `log_dir/inference_YYYYMMDD.jsonl` (UTC
day) or on standard output (`AuditLog.to_stdout`, the convention of container log collectors).

Fields (the original design's): timestamp, user_id, adapter_used, adapter_active,
mesh_context_used, device, latency_ms, metadata {max_length, temperature, system_prompt}, plus
request_id, tokens and status. User ids (also inside `user_<id>` adapter names) are written as an
HMAC-SHA256 under a per-install salt unless raw ids are opted in; the input, the assembled prompt,
the output and the system prompt's text are written only with `log_prompts=True` (otherwise the
metadata says only whether there was a system prompt). Each line goes out in one O_APPEND write,
so lines from threads or processes sharing a file never interleave.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import queue
import secrets
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from saigon_runtime.config import RuntimeConfig

log = logging.getLogger(__name__)

STDOUT_FD = 1
STDOUT = "stdout"
REDACTED = "[redacted]"
SALT_FILE = ".audit_salt"
SALT_BYTES = 32
FILE_PREFIX = "inference_"
FILE_SUFFIX = ".jsonl"
USER_ADAPTER_PREFIX = "user_"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AuditRecord:
    """What one served request contributes to the log; `timestamp` is stamped by the log."""

    request_id: str
    user_id: str | None
    adapter_used: str | None  # adapter name that served, None for the base model
    adapter_active: str | None  # that adapter's version
    mesh_context_used: bool
    device: str
    latency_ms: float
    tokens_in: int
    tokens_out: int
    status: str  # "ok", or an error kind such as "busy", "adapter_not_found", "cancelled"
    input: str | None = None  # written only when the log was opened with log_prompts=True
    prompt: str | None = None  # the assembled prompt (with mesh context); log_prompts only
    output: str | None = None
    metadata: Mapping[str, object] = field(default_factory=dict)  # max_length, temperature, system_prompt


class AuditLog:
    """Appends audit records; `write` is synchronous and thread-safe, `submit`/`awrite` hand
    the write to one background thread so an event loop never waits on the disk."""

    def __init__(
        self,
        log_dir: Path | str | None,
        *,
        log_prompts: bool = False,
        hash_user_ids: bool = True,
        salt: bytes | None = None,
        clock: Clock = utc_now,
        max_pending: int = 10_000,
    ):
        """`log_dir=None` writes to standard output (then pass the install's `salt`, or hashes
        use a random one and change at every restart)."""
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.log_prompts = log_prompts
        self.hash_user_ids = hash_user_ids
        self.clock = clock
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        if salt is None and hash_user_ids:
            if self.log_dir is not None:
                salt = load_or_create_salt(self.log_dir)
            else:
                log.warning("audit log: no install salt given; hashed user ids change at every restart")
                salt = secrets.token_bytes(SALT_BYTES)
        self._salt = salt or b""
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._fd_day: date | None = None
        self._pending: queue.Queue[tuple[AuditRecord, Future[None] | None] | None] = queue.Queue(max_pending)
        self._writer: threading.Thread | None = None
        self._closed = False
        self._intake = threading.Lock()  # guards _accepting, _writer and dropped
        self._accepting = True
        self.dropped = 0  # records submitted while the background queue was full
        self.failed = 0  # background writes that raised

    @classmethod
    def to_stdout(cls, **options: Any) -> AuditLog:
        return cls(None, **options)

    def path_for(self, day: date) -> Path:
        assert self.log_dir is not None, "this audit log writes to standard output"
        return self.log_dir / f"{FILE_PREFIX}{day:%Y%m%d}{FILE_SUFFIX}"

    def user_key(self, user_id: str | None) -> str | None:
        """How `user_id` appears in the log: an HMAC-SHA256 hex digest unless raw ids are opted in."""
        if user_id is None or not self.hash_user_ids:
            return user_id
        return hmac.new(self._salt, user_id.encode(), hashlib.sha256).hexdigest()

    def adapter_key(self, adapter: str | None) -> str | None:
        """A per-user adapter's name carries the user id (`user_<id>`): hashed the same way."""
        if adapter is None or not self.hash_user_ids or not adapter.startswith(USER_ADAPTER_PREFIX):
            return adapter
        return USER_ADAPTER_PREFIX + str(self.user_key(adapter.removeprefix(USER_ADAPTER_PREFIX)))

    def entry(self, record: AuditRecord, now: datetime) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "timestamp": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "request_id": record.request_id,
            "user_id": self.user_key(record.user_id),
            "user_id_hashed": self.hash_user_ids and record.user_id is not None,
            "adapter_used": self.adapter_key(record.adapter_used),
            "adapter_active": record.adapter_active,
            "mesh_context_used": record.mesh_context_used,
            "device": record.device,
            "latency_ms": round(record.latency_ms, 3),
            "tokens_in": record.tokens_in,
            "tokens_out": record.tokens_out,
            "status": record.status,
            "metadata": self._metadata(record.metadata),
        }
        if self.log_prompts:
            entry["input"] = record.input
            entry["prompt"] = record.prompt
            entry["output"] = record.output
        return entry

    def _metadata(self, metadata: Mapping[str, object]) -> dict[str, object]:
        out = {key: metadata.get(key) for key in ("max_length", "temperature", "system_prompt")}
        if not self.log_prompts and out["system_prompt"] is not None:
            out["system_prompt"] = REDACTED
        return out

    def write(self, record: AuditRecord) -> dict[str, Any]:
        """Append one line now (blocking); returns the entry as written."""
        now = _as_utc(self.clock())
        entry = self.entry(record, now)
        # ASCII-only JSON: no raw U+2028 or other characters that some readers take as line breaks.
        line = (json.dumps(entry, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._closed:
                raise RuntimeError("audit log is closed")
            fd = self._fd_for(now.date())
            _write_all(fd, line)
        return entry

    def submit(self, record: AuditRecord) -> None:
        """Queue one record for the background writer; never blocks. A full queue drops the
        record and counts it in `dropped` (the disk is stalled; serving goes on)."""
        self._enqueue(record, None)

    async def awrite(self, record: AuditRecord) -> None:
        """Write through the background thread and wait for it; raises what the write raised."""
        future: Future[None] = Future()
        self._enqueue(record, future)
        await asyncio.wrap_future(future)

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything submitted so far is written."""
        with self._intake:
            running = self._writer is not None and self._accepting
        if running:
            done: Future[None] = Future()
            self._pending.put((_FLUSH, done))
            done.result(timeout)

    def close(self) -> None:
        """Write what is queued, stop the background thread and close the file."""
        with self._intake:
            self._accepting = False
            writer = self._writer
        if writer is not None:
            self._pending.put(None)  # after every accepted record, as intake is shut
            writer.join()
        # A flush that raced with close may have queued behind the stop marker: release it.
        while not self._pending.empty():
            item = self._pending.get_nowait()
            if item is not None and item[1] is not None:
                item[1].set_result(None)
        with self._lock:
            self._closed = True
            self._close_fd()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _enqueue(self, record: AuditRecord, future: Future[None] | None) -> None:
        with self._intake:
            if not self._accepting:
                raise RuntimeError("audit log is closed")
            if self._writer is None:
                self._writer = threading.Thread(target=self._drain, name="saigon-audit", daemon=True)
                self._writer.start()
            try:
                self._pending.put_nowait((record, future))
                return
            except queue.Full:
                self.dropped += 1
        if future is not None:
            future.set_exception(RuntimeError("audit queue is full"))

    def _drain(self) -> None:
        while (item := self._pending.get()) is not None:
            record, future = item
            try:
                if record is not _FLUSH:
                    self.write(record)
            except Exception as exc:
                self.failed += 1
                log.warning("audit write failed: %s", type(exc).__name__)
                if future is not None:
                    future.set_exception(exc)
                continue
            if future is not None:
                future.set_result(None)

    def _fd_for(self, day: date) -> int:
        if self.log_dir is None:
            return STDOUT_FD
        if self._fd is None or self._fd_day != day:
            self._close_fd()
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._fd = os.open(self.path_for(day), flags, 0o640)
            self._fd_day = day
        return self._fd

    def _close_fd(self) -> None:
        if self._fd is not None and self.log_dir is not None:
            os.close(self._fd)
            self._fd, self._fd_day = None, None


# Sentinel record that asks the writer thread to acknowledge a flush.
_FLUSH = AuditRecord("", None, None, None, False, "", 0.0, 0, 0, "")


def load_or_create_salt(log_dir: Path) -> bytes:
    """The install's salt in `log_dir/.audit_salt`, created once (0600) by whichever process is first."""
    path = log_dir / SALT_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return _read_salt(path)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(SALT_BYTES))
        f.flush()
        os.fsync(f.fileno())
    return _read_salt(path)


def _read_salt(path: Path) -> bytes:
    # Another process may have created the file an instant ago and still be writing it.
    for _ in range(100):
        salt = path.read_bytes()
        if len(salt) >= SALT_BYTES:
            return salt
        threading.Event().wait(0.01)
    raise RuntimeError(f"{path} holds no usable salt ({len(salt)} bytes); delete it to make a new one")


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def audit_from_config(config: RuntimeConfig) -> AuditLog | None:
    """The audit log the configuration asks for: stdout (SAIGON_AUDIT_DEST=stdout), files in
    SAIGON_LOG_DIR, or none."""
    options: dict[str, Any] = {
        "log_prompts": config.log_prompts,
        "hash_user_ids": not config.audit_raw_user_ids,
        "salt": config.audit_salt.encode() if config.audit_salt else None,
    }
    if config.audit_dest == STDOUT:
        return AuditLog.to_stdout(**options)
    if config.audit_dest not in (None, "", "dir"):
        raise ValueError(f"SAIGON_AUDIT_DEST must be stdout or dir, not {config.audit_dest!r}")
    return AuditLog(config.log_dir, **options) if config.log_dir is not None else None
