"""After a restart with the hot set persisted, the first requests of the hot users are cache hits."""

from __future__ import annotations

import json
import logging

from engine_helpers import make_engine, request
from saigon_runtime.adapters.hotset import load_hot_set, save_hot_set
from saigon_runtime.adapters.types import AdapterRef
from saigon_runtime.redact import shown


def test_hot_set_survives_a_restart(tiny_llama_dir, adapter_factory, adapters_dir, install):
    for i in range(4):
        install(adapters_dir, f"user_h{i}", "v1", adapter_factory(tiny_llama_dir, seed=90 + i))
    engine = make_engine(tiny_llama_dir, adapters_dir, max_loras=2)
    ids = engine.tokenizer("hello")["input_ids"]
    for name in ("user_h0", "user_h1", "user_h2"):
        engine.submit(request(ids, AdapterRef(name, "v1"))).result(30)
    engine.adapters.pin("user_h2", True)
    save_hot_set(engine.adapters)
    engine.stop()

    restarted = make_engine(tiny_llama_dir, adapters_dir, max_loras=2)
    try:
        loaded = load_hot_set(restarted.adapters)
        assert set(loaded) == {AdapterRef("user_h1", "v1"), AdapterRef("user_h2", "v1")}
        assert restarted.adapters.pool.pinned("user_h2")
        before = restarted.adapters.stats()
        for name in ("user_h1", "user_h2"):
            restarted.submit(request(ids, AdapterRef(name, "v1"))).result(30)
        after = restarted.adapters.stats()
        assert after.hits - before.hits == 2 and after.misses == before.misses
    finally:
        restarted.stop()


def test_a_missing_or_corrupt_hot_set_preloads_nothing(tiny_llama_dir, adapters_dir):
    engine = make_engine(tiny_llama_dir, adapters_dir)
    try:
        assert load_hot_set(engine.adapters) == []
        (adapters_dir / ".saigon-hotset.json").write_text('{"adapters": [{"name": "../etc", "version": "x"}]}')
        assert load_hot_set(engine.adapters) == []
        (adapters_dir / ".saigon-hotset.json").write_text("not json")
        assert load_hot_set(engine.adapters) == []
    finally:
        engine.stop()


def test_a_skipped_hot_set_entry_is_logged_without_the_user_id(tiny_llama_dir, adapters_dir, caplog):
    engine = make_engine(tiny_llama_dir, adapters_dir)
    caplog.set_level(logging.INFO, logger="saigon_runtime.adapters.hotset")
    try:
        entries = [{"name": "user_carol.smith", "version": "v1"}, {"name": "domain_law", "version": "v1"}]
        (adapters_dir / ".saigon-hotset.json").write_text(json.dumps({"adapters": entries}))
        assert load_hot_set(engine.adapters) == []
        skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
        assert len(skipped) == 2
        assert "carol" not in caplog.text
        assert any(m.startswith(f"hot set entry {shown('user_carol.smith')}@v1") for m in skipped)
        assert any("domain_law@v1" in m for m in skipped)  # shared adapters keep their names
    finally:
        engine.stop()
