"""The engine's thread alone runs torch on several threads (see saigon_runtime.engine.threads)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from engine_helpers import make_engine
from saigon_runtime.engine import threads


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000\n", 1), ("400000 100000\n", 4), ("x y\n", None)],
)
def test_the_cpu_quota_is_read_from_cgroup_v2(tmp_path: Path, text: str, cpus: int | None) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(text)
    assert threads.cpu_quota(cpu_max) == cpus


def test_no_cgroup_file_means_no_quota(tmp_path: Path) -> None:
    assert threads.cpu_quota(tmp_path / "missing") is None


def test_the_engine_thread_takes_its_threads_and_every_other_thread_one(
    tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threads, "engine_threads", lambda: 2)
    before = torch.get_num_threads()
    engine = make_engine(tiny_llama_dir, None)
    try:
        assert engine.call(torch.get_num_threads, 30) == 2
        assert torch.get_num_threads() == 1  # the thread that built and started the engine
        seen: list[int] = []
        fresh = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        fresh.start()
        fresh.join()
        assert seen == [1]  # a thread that never ran torch before takes one as well
    finally:
        engine.stop()
        torch.set_num_threads(before)


def test_a_call_runs_on_the_engine_thread_and_returns_or_raises(tiny_llama_dir: Path) -> None:
    engine = make_engine(tiny_llama_dir, None)
    try:
        assert engine.call(lambda: threading.current_thread().name, 30) == "saigon-engine"
        with pytest.raises(ZeroDivisionError):
            engine.call(lambda: 1 // 0, 30)
    finally:
        engine.stop()
