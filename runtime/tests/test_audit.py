"""The audit log: file naming, fields, user-id hashing, prompt opt-in, day rotation, atomic appends."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from saigon_runtime.audit import SALT_FILE, AuditLog, AuditRecord

FIELDS = {
    "timestamp",
    "request_id",
    "user_id",
    "user_id_hashed",
    "adapter_used",
    "adapter_active",
    "mesh_context_used",
    "device",
    "latency_ms",
    "tokens_in",
    "tokens_out",
    "status",
    "metadata",
}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def record(**overrides: Any) -> AuditRecord:
    values: dict[str, Any] = {
        "request_id": "req-1",
        "user_id": "alice",
        "adapter_used": "user_alice",
        "adapter_active": "v3",
        "mesh_context_used": True,
        "device": "cpu",
        "latency_ms": 12.3456,
        "tokens_in": 17,
        "tokens_out": 5,
        "status": "ok",
        "prompt": "my secret question",
        "output": "the secret answer",
    }
    values.update(overrides)
    return AuditRecord(**values)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_line_per_request_in_a_file_named_by_utc_day(tmp_path: Path) -> None:
    clock = Clock(datetime(2025, 3, 9, 23, 30, 0, 123456, tzinfo=UTC))
    with AuditLog(tmp_path, clock=clock) as audit:
        audit.write(record())
        audit.write(record(request_id="req-2", status="busy", tokens_out=0))
    path = tmp_path / "inference_20250309.jsonl"
    entries = lines(path)
    assert [e["request_id"] for e in entries] == ["req-1", "req-2"]
    first = entries[0]
    assert set(first) == FIELDS
    assert first["timestamp"] == "2025-03-09T23:30:00.123Z"
    assert first["adapter_used"] == f"user_{first['user_id']}"
    assert first["adapter_active"] == "v3"
    assert first["mesh_context_used"] is True
    assert first["device"] == "cpu"
    assert first["latency_ms"] == 12.346
    assert (first["tokens_in"], first["tokens_out"], first["status"]) == (17, 5, "ok")
    assert entries[1]["status"] == "busy"


def test_prompt_and_output_are_left_out_by_default(tmp_path: Path) -> None:
    with AuditLog(tmp_path) as audit:
        audit.write(record())
    (path,) = tmp_path.glob("inference_*.jsonl")
    raw = path.read_text()
    assert "secret" not in raw
    assert "alice" not in raw  # neither as the user id nor inside the adapter name


def test_prompt_and_output_are_written_when_opted_in(tmp_path: Path) -> None:
    with AuditLog(tmp_path, log_prompts=True) as audit:
        audit.write(record())
    (path,) = tmp_path.glob("inference_*.jsonl")
    (entry,) = lines(path)
    assert entry["prompt"] == "my secret question"
    assert entry["output"] == "the secret answer"


def test_user_ids_are_salted_hashes_stable_within_an_install(tmp_path: Path) -> None:
    with AuditLog(tmp_path) as audit:
        audit.write(record(user_id="alice"))
    with AuditLog(tmp_path) as again:  # a restart reads the same salt
        again.write(record(user_id="alice"))
        again.write(record(user_id="bob"))
    salt = (tmp_path / SALT_FILE).read_bytes()
    assert len(salt) == 32
    assert ((tmp_path / SALT_FILE).stat().st_mode & 0o777) == 0o600
    (path,) = tmp_path.glob("inference_*.jsonl")
    alice1, alice2, bob = lines(path)
    expected = hmac.new(salt, b"alice", hashlib.sha256).hexdigest()
    assert alice1["user_id"] == alice2["user_id"] == expected
    assert alice1["adapter_used"] == f"user_{expected}"  # joinable with user_id, not readable
    assert alice1["user_id_hashed"] is True
    assert bob["user_id"] != expected
    assert alice1["user_id"] != hashlib.sha256(b"alice").hexdigest()  # unsalted would be guessable


def test_another_install_hashes_differently(tmp_path: Path) -> None:
    one, two = AuditLog(tmp_path / "a"), AuditLog(tmp_path / "b")
    assert one.user_key("alice") != two.user_key("alice")


def test_raw_user_ids_when_opted_in(tmp_path: Path) -> None:
    with AuditLog(tmp_path, hash_user_ids=False) as audit:
        entry = audit.write(record(user_id="alice"))
        anonymous = audit.write(record(user_id=None))
    assert entry["user_id"] == "alice" and entry["user_id_hashed"] is False
    assert entry["adapter_used"] == "user_alice"
    assert anonymous["user_id"] is None
    assert not (tmp_path / SALT_FILE).exists()


def test_files_rotate_at_utc_midnight(tmp_path: Path) -> None:
    clock = Clock(datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC))
    with AuditLog(tmp_path, clock=clock) as audit:
        audit.write(record(request_id="old-year"))
        clock.now += timedelta(seconds=2)
        audit.write(record(request_id="new-year"))
        # 01:00 at UTC+2 is still 23:00 of the previous UTC day.
        clock.now = datetime(2026, 1, 2, 1, 0, tzinfo=timezone(timedelta(hours=2)))
        audit.write(record(request_id="local-time"))
    assert sorted(p.name for p in tmp_path.glob("inference_*")) == [
        "inference_20251231.jsonl",
        "inference_20260101.jsonl",
    ]
    assert [e["request_id"] for e in lines(tmp_path / "inference_20251231.jsonl")] == ["old-year"]
    assert [e["request_id"] for e in lines(tmp_path / "inference_20260101.jsonl")] == ["new-year", "local-time"]
    assert lines(tmp_path / "inference_20260101.jsonl")[1]["timestamp"] == "2026-01-01T23:00:00.000Z"


def test_text_with_line_separators_stays_on_one_line(tmp_path: Path) -> None:
    with AuditLog(tmp_path, log_prompts=True) as audit:
        audit.write(record(prompt="a\nb\u2028c\r\nd", output="é\x00"))
    (path,) = tmp_path.glob("inference_*.jsonl")
    assert len(path.read_bytes().splitlines()) == 1
    assert lines(path)[0]["prompt"] == "a\nb\u2028c\r\nd"


def test_concurrent_writers_never_interleave_lines(tmp_path: Path) -> None:
    big = "x" * 20_000  # larger than a pipe buffer: a split write would show up
    logs = [AuditLog(tmp_path, log_prompts=True, salt=b"s" * 32) for _ in range(2)]  # two "processes"

    def hammer(audit: AuditLog, name: str) -> None:
        for i in range(100):
            audit.write(record(request_id=f"{name}-{i}", prompt=big))

    threads = [threading.Thread(target=hammer, args=(logs[i % 2], f"t{i}")) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for audit in logs:
        audit.close()
    (path,) = tmp_path.glob("inference_*.jsonl")
    entries = lines(path)
    assert len(entries) == 400
    assert {e["request_id"] for e in entries} == {f"t{i}-{j}" for i in range(4) for j in range(100)}


async def test_awrite_writes_off_the_event_loop(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path, clock=lambda: datetime(2025, 1, 1, tzinfo=UTC))
    loop_thread = threading.get_ident()
    writer_threads: set[int] = set()
    original = audit.write

    def spying_write(rec: AuditRecord) -> dict[str, Any]:
        writer_threads.add(threading.get_ident())
        return original(rec)

    audit.write = spying_write  # type: ignore[method-assign,assignment]
    await asyncio.gather(*(audit.awrite(record(request_id=f"r{i}")) for i in range(20)))
    audit.close()
    assert len(writer_threads) == 1 and loop_thread not in writer_threads
    path = tmp_path / "inference_20250101.jsonl"
    assert [e["request_id"] for e in lines(path)] == [f"r{i}" for i in range(20)]  # one writer keeps order


async def test_awrite_raises_what_the_write_raised(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path, clock=lambda: datetime(2025, 1, 1, tzinfo=UTC))
    (tmp_path / "inference_20250101.jsonl").mkdir()  # the day's file cannot be opened
    with pytest.raises(IsADirectoryError):
        await audit.awrite(record())
    audit.submit(record())
    audit.flush(timeout=5)
    assert audit.failed == 2
    audit.close()


def test_submit_is_written_by_flush_and_close(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path)
    for i in range(50):
        audit.submit(record(request_id=f"s{i}"))
    audit.flush(timeout=5)
    (path,) = tmp_path.glob("inference_*.jsonl")
    assert len(lines(path)) == 50
    audit.submit(record(request_id="last"))
    audit.close()
    assert lines(path)[-1]["request_id"] == "last"
    with pytest.raises(RuntimeError, match="closed"):
        audit.write(record())


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path, max_pending=1)
    gate = threading.Event()
    original = audit.write

    def slow_write(rec: AuditRecord) -> dict[str, Any]:
        gate.wait(5)
        return original(rec)

    audit.write = slow_write  # type: ignore[method-assign,assignment]
    for i in range(10):
        audit.submit(record(request_id=f"d{i}"))
    assert audit.dropped >= 8
    gate.set()
    audit.close()
    (path,) = tmp_path.glob("inference_*.jsonl")
    assert 1 <= len(lines(path)) <= 2


def test_log_files_are_private(tmp_path: Path) -> None:
    with AuditLog(tmp_path) as audit:
        audit.write(record())
    (path,) = tmp_path.glob("inference_*.jsonl")
    assert path.stat().st_mode & 0o007 == 0  # nothing for "other"


def test_shared_adapter_names_are_not_hashed(tmp_path: Path) -> None:
    with AuditLog(tmp_path) as audit:
        assert audit.write(record(adapter_used="domain_legal"))["adapter_used"] == "domain_legal"
        assert audit.write(record(adapter_used="global"))["adapter_used"] == "global"
        assert audit.write(record(adapter_used=None))["adapter_used"] is None
