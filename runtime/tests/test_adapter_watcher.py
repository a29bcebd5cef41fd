"""Without the operator, new adapters and new `active` targets are found and verified; a broken
new version never replaces a working one."""

from __future__ import annotations

import logging
import os
import shutil
import time

from engine_helpers import make_engine
from saigon_runtime.adapters.types import AdapterRef
from saigon_runtime.adapters.watcher import AdapterWatcher


def _flip(adapters_dir, name, version):
    tmp = adapters_dir / name / ".tmp-flip"
    os.symlink(version, tmp)
    os.replace(tmp, adapters_dir / name / "active")


def _until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_new_adapters_and_versions_are_found_and_bad_ones_never_swap_in(
    tiny_llama_dir, adapter_factory, adapters_dir, install
):
    install(adapters_dir, "global", "v1", adapter_factory(tiny_llama_dir, seed=80))
    engine = make_engine(tiny_llama_dir, adapters_dir)
    watcher = AdapterWatcher(engine.adapters, interval_s=0.1)
    watcher.start()
    try:
        assert engine.adapters.resolve("neo").adapter == AdapterRef("global", "v1")
        # A new user's adapter appears on disk: verified in the background, then served.
        install(adapters_dir, "user_neo", "v1", adapter_factory(tiny_llama_dir, seed=81))
        assert _until(lambda: ("user_neo", "v1") in engine.adapters._host)
        assert engine.adapters.resolve("neo").adapter == AdapterRef("user_neo", "v1")
        # A new version, then a flip of `active`.
        shutil.copytree(adapter_factory(tiny_llama_dir, seed=82), adapters_dir / "user_neo" / "v2")
        _flip(adapters_dir, "user_neo", "v2")
        assert _until(lambda: ("user_neo", "v2") in engine.adapters._host)
        assert engine.adapters.resolve("neo").adapter == AdapterRef("user_neo", "v2")
        # A broken v3: it is refused and v2 keeps serving.
        bad = adapters_dir / "user_neo" / "v3"
        shutil.copytree(adapter_factory(tiny_llama_dir, seed=83), bad)
        (bad / "adapter_model.safetensors").write_bytes(b"garbage")
        _flip(adapters_dir, "user_neo", "v3")
        passes = watcher.passes
        assert _until(lambda: watcher.passes > passes + 1)
        assert engine.adapters.resolve("neo").adapter == AdapterRef("user_neo", "v2")
        assert "not a valid safetensors" in (engine.adapters.info("user_neo").error or "")
    finally:
        watcher.stop()
        engine.stop()


def test_a_malformed_config_is_refused_alone_once_and_retried_only_when_its_files_change(
    tiny_llama_dir, adapter_factory, adapters_dir, install, caplog
):
    """The scan goes on past a malformed adapter (it used to abort on the first one, every pass, so
    an adapter added later was never found); the refusal is logged once, without the user id,
    and the adapter is read again only when its files change."""
    install(adapters_dir, "global", "v1", adapter_factory(tiny_llama_dir, seed=84))
    # Sorted before the good one, so an aborted scan would never reach it.
    bad = install(adapters_dir, "user_aaa_secret", "v1", adapter_factory(tiny_llama_dir, seed=85))
    (bad / "adapter_config.json").write_text("[" * 60_000 + "]" * 60_000)
    engine = make_engine(tiny_llama_dir, adapters_dir)
    watcher = AdapterWatcher(engine.adapters, interval_s=0.05)
    caplog.set_level(logging.INFO, logger="saigon_runtime.adapters.watcher")
    watcher.start()
    try:
        install(adapters_dir, "user_zed", "v1", adapter_factory(tiny_llama_dir, seed=86))
        assert _until(lambda: ("user_zed", "v1") in engine.adapters._host)
        misses = engine.adapters.host_misses
        passes = watcher.passes
        assert _until(lambda: watcher.passes > passes + 5)
        assert engine.adapters.host_misses == misses  # the refusal is cached: no re-read while unchanged
        refusals = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
        assert len(refusals) == 1, refusals
        assert "aaa_secret" not in caplog.text and "zed" not in caplog.text
        assert "nests too deeply" in (engine.adapters.info("user_aaa_secret").error or "")
        # Fixed in place: the changed files are read again and the adapter serves.
        shutil.copy(adapter_factory(tiny_llama_dir, seed=85) / "adapter_config.json", bad / "adapter_config.json")
        assert _until(lambda: ("user_aaa_secret", "v1") in engine.adapters._host)
        assert engine.adapters.resolve("aaa_secret").adapter == AdapterRef("user_aaa_secret", "v1")
    finally:
        watcher.stop()
        engine.stop()
