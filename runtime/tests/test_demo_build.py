"""The demo build (at MINI scale): layout, PEFT-readability, adapters that learned their topic,
determinism, cache reuse and atomic installs."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from saigon_runtime.adapters.store import AdapterStore
from saigon_runtime.demo import MINI, DemoAssets, build_demo_assets, default_cache_dir, layout
from saigon_runtime.demo.build import entry_name
from saigon_runtime.demo.catalog import DEMO_ADAPTERS, DEMO_DOMAINS, DEMO_MESHES
from saigon_runtime.demo.corpus import GENERATOR_VERSION, topic_corpus
from saigon_runtime.demo.training import LORA_TARGETS, encode, mean_loss
from saigon_runtime.mesh.schema import parse_mesh
from transformers import AutoTokenizer, LlamaForCausalLM

HELD_OUT_SEED = 987654


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    # Tiny models: a second thread buys nothing and, on a shared CPU, costs several times over.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> DemoAssets:
    # Shared by the demo test modules: the first call builds, later ones reuse the cache entry.
    return build_demo_assets(tmp_path_factory.getbasetemp() / "demo-cache", scale=MINI, progress=False)


def test_layout_is_the_one_the_runtime_and_agent_share(assets: DemoAssets) -> None:
    assert assets.root.name == entry_name(MINI) and assets.root.name.startswith(f"demo-{GENERATOR_VERSION}")
    assert {p.name for p in assets.root.iterdir()} == {"base", "adapters", "mesh", "manifest.json"}
    store = AdapterStore(assets.adapters_dir)
    assert store.names() == sorted({spec.name for spec in DEMO_ADAPTERS})
    for spec in DEMO_ADAPTERS:
        version_dir = assets.adapters_dir / spec.name / spec.version
        assert sorted(os.listdir(version_dir)) == ["adapter_config.json", "adapter_model.safetensors"]
        link = assets.adapters_dir / spec.name / "active"
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
        if spec.active:
            assert os.readlink(link) == spec.version
            assert store.active_version(spec.name) == spec.version
    assert store.versions("user_alice") == ["v1", "v2"] and store.active_version("user_alice") == "v1"
    # No temporary symlinks or files left beside the versions.
    assert sorted(os.listdir(assets.adapters_dir / "user_alice")) == ["active", "v1", "v2"]


def test_domains_and_meshes_are_readable_by_the_runtime(assets: DemoAssets) -> None:
    assert assets.domains_file == assets.adapters_dir / "domains.json"
    assert json.loads(assets.domains_file.read_text()) == dict(DEMO_DOMAINS)
    store = AdapterStore(assets.adapters_dir)
    for user, domain in DEMO_DOMAINS.items():
        assert store.domain_of(user) == domain
        assert store.exists(f"domain_{domain}")
    for user in DEMO_MESHES:
        graph = parse_mesh((assets.mesh_dir / f"user_{user}_mesh.json").read_text())
        assert graph.nodes and graph.edges
        assert all(node.text and node.weight > 0 for node in graph.nodes)


def test_base_model_is_safetensors_only_and_sees_the_input_unchanged(assets: DemoAssets) -> None:
    files = set(os.listdir(assets.base_model_dir))
    assert "model.safetensors" in files and {"tokenizer.json", "tokenizer_config.json", "config.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)
    tokenizer = AutoTokenizer.from_pretrained(str(assets.base_model_dir))
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert not tokenizer.chat_template
    text = "What should I do this weekend?\nÇa va? 🚀"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.eos_token_id not in ids  # no special tokens added
    assert tokenizer.decode(ids) == text  # byte-level: exact round trip
    config = json.loads((assets.base_model_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == MINI.num_layers


def test_adapters_load_with_peft_through_the_active_link(assets: DemoAssets) -> None:
    base = LlamaForCausalLM.from_pretrained(str(assets.base_model_dir))
    model = PeftModel.from_pretrained(base, str(assets.adapters_dir / "global" / "active"))
    config = model.peft_config["default"]
    assert set(config.target_modules) == set(LORA_TARGETS)
    assert config.r == MINI.lora_rank
    saved = json.loads((assets.adapters_dir / "global" / "v1" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == str(assets.base_model_dir)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert len(lora_b) == MINI.num_layers * len(LORA_TARGETS)
    assert all(p.abs().sum() > 0 for p in lora_b)  # trained: PEFT initialises B to zero


def test_each_adapter_is_best_on_its_own_topic(assets: DemoAssets) -> None:
    """On held-out documents of its topic, an adapter's loss beats the base's and every other adapter's."""
    tokenizer = AutoTokenizer.from_pretrained(str(assets.base_model_dir))
    pad = tokenizer.pad_token_id
    seed = assets.manifest["seed"]
    held_out: dict[str, list[list[int]]] = {}
    for topic in {spec.topic for spec in DEMO_ADAPTERS}:
        seen = set(topic_corpus(topic, MINI.topic_docs, seed))
        fresh = [d for d in topic_corpus(topic, 80, HELD_OUT_SEED) if d not in seen][:40]
        assert len(fresh) >= 20
        held_out[topic] = encode(tokenizer, fresh)

    base = LlamaForCausalLM.from_pretrained(str(assets.base_model_dir))
    base_loss = {topic: mean_loss(base, seqs, pad) for topic, seqs in held_out.items()}
    labels = [f"{s.name}/{s.version}" for s in DEMO_ADAPTERS]
    model = PeftModel.from_pretrained(base, str(assets.adapters_dir / "user_alice" / "v1"), adapter_name=labels[0])
    for spec, label in zip(DEMO_ADAPTERS[1:], labels[1:], strict=True):
        model.load_adapter(str(assets.adapters_dir / spec.name / spec.version), adapter_name=label)
    loss: dict[str, dict[str, float]] = {}
    for label in labels:
        model.set_adapter(label)
        loss[label] = {topic: mean_loss(model, seqs, pad) for topic, seqs in held_out.items()}

    for spec, label in zip(DEMO_ADAPTERS, labels, strict=True):
        own = loss[label][spec.topic]
        assert own < base_loss[spec.topic] - 0.1, (label, own, base_loss[spec.topic])
        others = {other: loss[other][spec.topic] for other in labels if other != label}
        assert all(own < value - 0.05 for value in others.values()), (label, own, others)


def test_second_build_reuses_the_cache_without_training(assets: DemoAssets) -> None:
    weights = assets.base_model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = build_demo_assets(assets.root.parent, scale=MINI, progress=False)
    assert again.built is False and again.root == assets.root
    assert weights.stat().st_mtime_ns == before
    assert again.manifest == assets.manifest


def _tensors(root: Path) -> dict[str, torch.Tensor]:
    found = {}
    for path in sorted(root.rglob("*.safetensors")):
        for key, tensor in load_file(str(path)).items():
            found[f"{path.relative_to(root)}:{key}"] = tensor
    return found


def test_interrupted_build_leaves_nothing_and_rebuilds_are_deterministic(
    assets: DemoAssets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-build

    with monkeypatch.context() as patch:
        patch.setattr(layout, "save_adapter", interrupted)
        with pytest.raises(KeyboardInterrupt):
            build_demo_assets(cache, scale=MINI, progress=False)
    name = entry_name(MINI)
    assert [p.name for p in cache.iterdir()] == [f".{name}.lock"]  # no entry, no temp dir

    shutil.copytree(assets.root, cache / name, symlinks=True)  # an entry built earlier
    stale = cache / f".{name}.tmp-killed"  # and what a SIGKILLed build leaves behind
    (stale / "base").mkdir(parents=True)
    (cache / f".{name}.old-killed").mkdir()
    inode = (cache / name).stat().st_ino
    assert build_demo_assets(cache, scale=MINI, progress=False).built is False

    rebuilt = build_demo_assets(cache, force=True, scale=MINI, progress=False)
    assert rebuilt.built and rebuilt.root == cache / name and rebuilt.root.stat().st_ino != inode
    assert sorted(p.name for p in cache.iterdir()) == [f".{name}.lock", name]

    # Same seed, same everything: the tokenizer, the base weights, every adapter.
    assert (rebuilt.base_model_dir / "tokenizer.json").read_bytes() == (
        assets.base_model_dir / "tokenizer.json"
    ).read_bytes()
    ours, reference = _tensors(rebuilt.root), _tensors(assets.root)
    assert ours.keys() == reference.keys() and len(ours) > 0
    assert all(torch.equal(ours[key], reference[key]) for key in ours)


def test_default_cache_dir_follows_the_same_variables_as_the_scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAIGON_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "saigon"
    monkeypatch.setenv("XDG_CACHE_HOME", "/x/cache")
    assert default_cache_dir() == Path("/x/cache/saigon")
    monkeypatch.setenv("SAIGON_CACHE_DIR", "/y/saigon")
    assert default_cache_dir() == Path("/y/saigon")
