"""A corrupt, incompatible or malicious adapter is refused alone, with a precise reason."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import threading
from pathlib import Path

import pytest
import torch
from engine_helpers import make_engine, request
from safetensors.torch import load_file, save_file
from saigon_runtime.adapters.format import load_adapter
from saigon_runtime.adapters.legacy import import_legacy
from saigon_runtime.adapters.types import AdapterRef
from saigon_runtime.engine.lora import lora_targets
from saigon_runtime.errors import AdapterRejected
from saigon_runtime.testing.tiny import make_adapter, make_llama


class _Payload:
    """Unpickling this writes a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _shapes(base: Path):
    from transformers import AutoModelForCausalLM

    return lora_targets(AutoModelForCausalLM.from_pretrained(base))


def _load(path: Path, base: Path, max_rank: int = 64):
    return load_adapter(path, name="user_x", version="v1", shapes=_shapes(base), max_rank=max_rank)


def test_a_pickle_adapter_is_never_unpickled(tiny_llama_dir, adapter_factory, tmp_path):
    marker = tmp_path / "marker"
    bad = _copy(adapter_factory(tiny_llama_dir, seed=40), tmp_path / "bad")
    (bad / "adapter_model.safetensors").unlink()
    with (bad / "adapter_model.bin").open("wb") as f:
        pickle.dump({"x": _Payload(marker)}, f)
    with pytest.raises(AdapterRejected, match=r"adapter_model\.bin is a pickle file and is never loaded"):
        _load(bad, tiny_llama_dir)
    # Even the explicit import command refuses it, without running the payload.
    with pytest.raises(AdapterRejected, match="not a plain tensor state dict"):
        import_legacy(bad, tmp_path / "converted")
    assert not marker.exists()


def test_a_plain_legacy_state_dict_converts_to_an_identical_adapter(tiny_llama_dir, adapter_factory, tmp_path):
    good = adapter_factory(tiny_llama_dir, seed=41)
    legacy = _copy(good, tmp_path / "legacy")
    tensors = load_file(str(legacy / "adapter_model.safetensors"))
    (legacy / "adapter_model.safetensors").unlink()
    torch.save(tensors, legacy / "adapter_model.bin")
    converted = import_legacy(legacy, tmp_path / "converted")
    a, b = _load(good, tiny_llama_dir), _load(converted, tiny_llama_dir)
    assert a.modules.keys() == b.modules.keys()
    assert all(torch.equal(a.modules[m][0], b.modules[m][0]) for m in a.modules)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: _edit_config(d, use_dora=True), "DoRA"),
        (lambda d: _edit_config(d, peft_type="PREFIX_TUNING"), "peft_type"),
        (lambda d: _edit_config(d, use_qalora=True), "unsupported LoRA option use_qalora"),
        (lambda d: _edit_config(d, modules_to_save=["lm_head"]), "modules_to_save"),
        (lambda d: (d / "adapter_config.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x00" * 64), "not a valid safetensors"),
        (lambda d: _truncate(d / "adapter_model.safetensors"), "not a valid safetensors"),
        (lambda d: _edit_tensors(d, lambda k, v: v.fill_(float("nan"))), "NaN"),
        (lambda d: _edit_tensors(d, lambda k, v: v[:, :-1] if "lora_A" in k else v), "do not fit the base"),
        (lambda d: _rename_tensor(d, "q_proj", "q_projection"), "not a LoRA target"),
        (lambda d: _drop_tensor(d, "lora_B"), "lacks lora_B"),
    ],
)
def test_broken_adapters_are_refused_with_the_reason(tiny_llama_dir, adapter_factory, tmp_path, mutate, reason):
    d = _copy(adapter_factory(tiny_llama_dir, seed=42), tmp_path / "a")
    mutate(d)
    with pytest.raises(AdapterRejected, match=reason):
        _load(d, tiny_llama_dir)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"targets": ["embed_tokens", "q_proj"]}, "embedding LoRA"),
    ],
)
def test_adapters_peft_saves_with_features_the_engine_cannot_serve_are_refused_naming_them(
    tiny_llama_dir, tmp_path, options, reason
):
    made = make_adapter(tiny_llama_dir, tmp_path / "a", **options)  # type: ignore[arg-type]
    with pytest.raises(AdapterRejected, match=reason):
        _load(made, tiny_llama_dir)


def test_rank_above_the_maximum_and_adapters_of_another_base_are_refused(tiny_llama_dir, adapter_factory, tmp_path):
    with pytest.raises(AdapterRejected, match="rank 8 is above the maximum 4"):
        _load(adapter_factory(tiny_llama_dir, rank=8, seed=43), tiny_llama_dir, max_rank=4)
    other = make_llama(tmp_path / "other", hidden=32, intermediate=64)
    with pytest.raises(AdapterRejected, match="do not fit the base"):
        _load(adapter_factory(other, seed=44), tiny_llama_dir)


def test_a_bad_adapter_falls_back_alone_and_the_others_keep_serving(
    tiny_llama_dir, adapter_factory, adapters_dir, install, tmp_path
):
    install(adapters_dir, "user_good", "v1", adapter_factory(tiny_llama_dir, seed=45))
    install(adapters_dir, "global", "v1", adapter_factory(tiny_llama_dir, seed=46))
    bad = install(adapters_dir, "user_bad", "v1", adapter_factory(tiny_llama_dir, seed=47))
    _edit_config(bad, use_dora=True)
    # An `active` link that points outside its adapter folder is never followed.
    (adapters_dir / "user_evil").mkdir()
    os.symlink("../../", adapters_dir / "user_evil" / "active")
    engine = make_engine(tiny_llama_dir, adapters_dir)
    try:
        bad_res = engine.adapters.resolve("bad")
        assert bad_res.adapter == AdapterRef("global", "v1")
        assert "user_bad: rejected" in (bad_res.fallback_reason or "") and "DoRA" in bad_res.fallback_reason
        evil = engine.adapters.resolve("evil")
        assert evil.adapter == AdapterRef("global", "v1") and "user_evil: missing" in (evil.fallback_reason or "")
        good = engine.adapters.resolve("good")
        assert good.adapter == AdapterRef("user_good", "v1") and good.fallback_reason is None
        ids = engine.tokenizer("hello world")["input_ids"]
        results = [engine.submit(request(ids, r.adapter)).result(30) for r in (bad_res, good, evil)]
        assert all(r.finish_reason in ("length", "stop") for r in results)
        listed = {i.name: i for i in engine.adapters.list_adapters()}
        assert "DoRA" in (listed["user_bad"].error or "")
    finally:
        engine.stop()


def _edit_config(d: Path, **changes: object) -> None:
    path = d / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _edit_tensors(d: Path, fn) -> None:
    path = d / "adapter_model.safetensors"
    tensors = load_file(str(path))
    first = sorted(tensors)[0]
    tensors[first] = fn(first, tensors[first].clone()).contiguous()
    save_file(tensors, str(path))


def _rename_tensor(d: Path, old: str, new: str) -> None:
    path = d / "adapter_model.safetensors"
    tensors = load_file(str(path))
    save_file({k.replace(old, new): v for k, v in tensors.items()}, str(path))


def _drop_tensor(d: Path, part: str) -> None:
    path = d / "adapter_model.safetensors"
    tensors = load_file(str(path))
    victim = next(k for k in sorted(tensors) if part in k)
    save_file({k: v for k, v in tensors.items() if k != victim}, str(path))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ---- hostile adapter_config.json (issue 15, items 1-3) --------------------------------------


def test_a_catastrophic_pattern_runs_in_linear_time_and_keeps_peft_semantics(tiny_llama_dir, adapter_factory, tmp_path):
    """`(.|.){0,25}@` backtracks 2^25 times per module name in Python's `re` (seconds, GIL held);
    on RE2 it is linear. The same config otherwise matches as PEFT does: first key wins."""
    d = _copy(adapter_factory(tiny_llama_dir, seed=48), tmp_path / "redos")
    hostile = "(.|.){0,25}@"
    _edit_config(d, alpha_pattern={hostile: 2.0, "q_proj": 64.0})
    shapes = _shapes(tiny_llama_dir)
    finished: list[object] = []
    worker = threading.Thread(
        target=lambda: finished.append(load_adapter(d, name="user_x", version="v1", shapes=shapes, max_rank=64)),
        daemon=True,
    )
    worker.start()
    # Generous for a loaded CI machine; the backtracking engine needs hours for this config.
    worker.join(60)
    assert finished, "loading an adapter with a catastrophic pattern did not finish"
    host = finished[0]
    plain = load_adapter(adapter_factory(tiny_llama_dir, seed=48), name="user_x", version="v1", shapes=shapes,
                         max_rank=64)  # fmt: skip
    for module, (_a, b) in host.modules.items():
        factor = 64.0 / 8.0 if module.endswith("q_proj") else 1.0  # make_adapter's alpha is 8
        assert torch.allclose(b, plain.modules[module][1] * factor), module


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(a)\\1", "alpha_pattern: pattern .* is not a supported regular expression"),
        ("(?=q)q_proj", "alpha_pattern: pattern .* is not a supported regular expression"),
        ("((((", "alpha_pattern: pattern .* is not a supported regular expression"),
        ("(.{500}){500}", "alpha_pattern: pattern .* is not a supported regular expression"),
        ("x" * 600, "alpha_pattern"),
    ],
)
def test_patterns_that_cannot_run_linearly_are_refused(tiny_llama_dir, adapter_factory, tmp_path, pattern, reason):
    d = _copy(adapter_factory(tiny_llama_dir, seed=49), tmp_path / "p")
    _edit_config(d, alpha_pattern={pattern: 2.0})
    with pytest.raises(AdapterRejected, match=reason):
        _load(d, tiny_llama_dir)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"lora_alpha": "abc"}', "lora_alpha"),
        ('{"lora_alpha": NaN}', "lora_alpha: Input should be a finite number"),
        ('{"lora_alpha": Infinity}', "lora_alpha: Input should be a finite number"),
        ('{"lora_alpha": 1e308}', "lora_alpha"),
        ('{"lora_alpha": -4}', "lora_alpha"),
        ('{"r": "4"}', "r: "),
        ('{"r": 0}', "r: "),
        ('{"use_rslora": "yes"}', "use_rslora"),
        ('{"alpha_pattern": ["q_proj"]}', "alpha_pattern"),
        ('{"alpha_pattern": {"q_proj": "big"}}', "alpha_pattern.q_proj"),
        ('{"rank_pattern": {"q_proj": 2.5}}', "rank_pattern.q_proj"),
        ('{"rank_pattern": {"q_proj": 6}}', "its weights have rank 4, its config says r=6"),
        ("[" * 60_000 + "]" * 60_000, "nests too deeply"),
        ('{"a": ' * 20 + "1" + "}" * 20, "nests deeper than"),
    ],
)
def test_malformed_config_values_are_named_refusals(tiny_llama_dir, adapter_factory, tmp_path, raw, reason):
    d = _copy(adapter_factory(tiny_llama_dir, seed=50), tmp_path / "c")
    config = json.loads((d / "adapter_config.json").read_text())
    if raw.startswith("{") and raw.endswith("}") and '"a"' not in raw:
        text = json.dumps(config)[:-1] + ", " + raw[1:]  # the good config, with these keys overriding
    else:
        text = raw
    (d / "adapter_config.json").write_text(text)
    with pytest.raises(AdapterRejected, match=reason):
        _load(d, tiny_llama_dir)


def test_adapter_files_and_versions_behind_symlinks_are_refused(
    tiny_llama_dir, adapter_factory, adapters_dir, install, tmp_path
):
    install(adapters_dir, "global", "v1", adapter_factory(tiny_llama_dir, seed=51))
    outside = _copy(adapter_factory(tiny_llama_dir, seed=52), tmp_path / "outside")
    # A weights file that is a link out of the adapters directory.
    linked_file = install(adapters_dir, "user_lf", "v1", adapter_factory(tiny_llama_dir, seed=53))
    (linked_file / "adapter_model.safetensors").unlink()
    os.symlink(outside / "adapter_model.safetensors", linked_file / "adapter_model.safetensors")
    # A version directory that is a link out of the adapters directory.
    (adapters_dir / "user_lv").mkdir()
    os.symlink(outside, adapters_dir / "user_lv" / "v1")
    os.symlink("v1", adapters_dir / "user_lv" / "active")
    # A whole adapter folder that is a link out of the adapters directory.
    linked_name = tmp_path / "elsewhere"
    install(linked_name, "user_ln", "v1", outside)
    os.symlink(linked_name / "user_ln", adapters_dir / "user_ln")
    engine = make_engine(tiny_llama_dir, adapters_dir)
    try:
        for user in ("lf", "ln"):
            res = engine.adapters.resolve(user)
            assert res.adapter == AdapterRef("global", "v1"), user
            assert "symbolic link" in (res.fallback_reason or ""), (user, res.fallback_reason)
            with pytest.raises(AdapterRejected, match="symbolic link"):
                engine.adapters.resolve(user, f"user_{user}", strict=True)
        # An `active` link to a linked version reads as no active version (saigon_contract.layout);
        # naming that version explicitly is refused with the reason.
        res = engine.adapters.resolve("lv")
        assert res.adapter == AdapterRef("global", "v1") and "user_lv: missing" in (res.fallback_reason or "")
        with pytest.raises(AdapterRejected, match="symbolic link"):
            engine.adapters.load("user_lv", "v1")
    finally:
        engine.stop()
