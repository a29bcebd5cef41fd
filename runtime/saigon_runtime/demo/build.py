"""Building the demo assets once, into a cache keyed by the generator's version.

The build trains into a temporary directory next to the cache entry and renames it into place,
so an interrupted build never leaves a half-built entry; a file lock keeps two builds of the same
entry from training twice. Torch and friends are imported only when a build actually runs, so
reusing the cache costs milliseconds (the manifest says where everything is).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from saigon_runtime.demo.catalog import DEMO_ADAPTERS, DEMO_DOMAINS, DEMO_MESHES, DEMO_PROMPTS, AdapterSpec
from saigon_runtime.demo.corpus import GENERATOR_VERSION

CACHE_DIR_ENV = "SAIGON_CACHE_DIR"
DEFAULT_SEED = 1234
MANIFEST = "manifest.json"
# The models are tiny: one thread does almost all the work two would, and on a busy machine
# two threads spin against each other (measured 4x slower per step on a shared 2-core box).
BUILD_THREADS = 1


@dataclass(frozen=True)
class DemoScale:
    """How big the demo is; `MINI` is the same recipe shrunk for tests."""

    name: str
    base_docs: int
    topic_docs: int
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    base_steps: int
    base_batch: int
    base_lr: float
    adapter_steps: int
    adapter_batch: int
    adapter_lr: float
    lora_rank: int


FULL = DemoScale(
    name="full",
    base_docs=4000,
    topic_docs=800,
    vocab_size=2048,
    hidden_size=128,
    intermediate_size=384,
    num_layers=4,
    num_heads=4,
    base_steps=350,
    base_batch=32,
    base_lr=3e-3,
    adapter_steps=120,
    adapter_batch=16,
    adapter_lr=5e-3,
    lora_rank=16,
)

MINI = DemoScale(
    name="mini",
    base_docs=400,
    topic_docs=160,
    vocab_size=1024,
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=2,
    base_steps=60,
    base_batch=16,
    base_lr=1e-2,
    adapter_steps=30,
    adapter_batch=16,
    adapter_lr=1e-2,
    lora_rank=8,
)


@dataclass(frozen=True)
class DemoAssets:
    root: Path
    base_model_dir: Path
    adapters_dir: Path
    mesh_dir: Path
    domains_file: Path
    built: bool  # False when an existing cache entry was reused
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def at(cls, root: Path, built: bool) -> DemoAssets:
        manifest = json.loads((root / MANIFEST).read_text())
        return cls(
            root=root,
            base_model_dir=root / "base",
            adapters_dir=root / "adapters",
            mesh_dir=root / "mesh",
            domains_file=root / manifest["domains_file"],
            built=built,
            manifest=manifest,
        )

    def env(self) -> dict[str, str]:
        """The SAIGON_* variables that point a runtime at these assets."""
        return {
            "SAIGON_BASE_MODEL": str(self.base_model_dir),
            "SAIGON_ADAPTERS_DIR": str(self.adapters_dir),
            "SAIGON_MESH_DIR": str(self.mesh_dir),
        }


def default_cache_dir() -> Path:
    """`${SAIGON_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/saigon}`, as scripts/env.sh resolves it."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "saigon"


def entry_name(scale: DemoScale = FULL, seed: int = DEFAULT_SEED) -> str:
    if scale == FULL and seed == DEFAULT_SEED:
        return f"demo-{GENERATOR_VERSION}"
    return f"demo-{GENERATOR_VERSION}-{scale.name}-seed{seed}"


def build_demo_assets(
    cache_dir: Path | None = None,
    force: bool = False,
    *,
    scale: DemoScale = FULL,
    seed: int = DEFAULT_SEED,
    progress: bool = True,
) -> DemoAssets:
    """The demo's base model, adapters and meshes: reused from the cache, or built (minutes) and cached."""
    parent = (cache_dir or default_cache_dir()).expanduser().resolve()
    parent.mkdir(parents=True, exist_ok=True)
    name = entry_name(scale, seed)
    final = parent / name
    if not force and (final / MANIFEST).is_file():
        return DemoAssets.at(final, built=False)
    with _exclusive(parent / f".{name}.lock"):
        if not force and (final / MANIFEST).is_file():  # built by whoever held the lock before us
            return DemoAssets.at(final, built=False)
        for pattern in (f".{name}.tmp-*", f".{name}.old-*"):  # left by a build that was killed
            for stale in parent.glob(pattern):
                shutil.rmtree(stale, ignore_errors=True)
        temp = parent / f".{name}.tmp-{uuid.uuid4().hex}"
        try:
            _build_into(temp, final, scale, seed, progress)
            _install(temp, final)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    return DemoAssets.at(final, built=True)


def _install(temp: Path, final: Path) -> None:
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex}")
        os.rename(final, trash)
        os.rename(temp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(temp, final)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_torch(threads: int) -> Iterator[None]:
    """`threads` torch threads, and no per-file progress bars from transformers, while building."""
    import torch
    from transformers.utils import logging as hf_logging

    threads_before, bars_before = torch.get_num_threads(), hf_logging.is_progress_bar_enabled()
    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        torch.set_num_threads(threads_before)
        if bars_before:
            hf_logging.enable_progress_bar()


def _build_into(root: Path, final: Path, scale: DemoScale, seed: int, progress: bool) -> None:
    """Train everything into `root`; paths written into configs name `final`, where it will live."""
    import copy

    from tqdm.auto import tqdm

    from saigon_runtime.demo import corpus, layout
    from saigon_runtime.demo.corpus import stable_seed
    from saigon_runtime.demo.tokenizer import save_tokenizer, train_tokenizer
    from saigon_runtime.demo.training import ModelShape, TrainPlan, base_model, encode, lora_model, train

    wall0, cpu0 = time.perf_counter(), time.process_time()
    topics = sorted({spec.topic for spec in DEMO_ADAPTERS})
    stages = tqdm(total=4 + len(DEMO_ADAPTERS), desc="demo build", unit="stage", disable=not progress)
    with _quiet_torch(BUILD_THREADS), stages:
        stages.set_postfix_str("corpus")
        base_texts = corpus.base_corpus(scale.base_docs, seed)
        topic_texts = {t: corpus.topic_corpus(t, scale.topic_docs, seed) for t in topics}
        stages.update()

        stages.set_postfix_str("tokenizer")
        tokenizer = train_tokenizer(base_texts + [d for t in topics for d in topic_texts[t]], scale.vocab_size)
        pad_id = tokenizer.pad_token_id
        assert isinstance(pad_id, int)
        stages.update()

        stages.set_postfix_str("base model")
        shape = ModelShape(scale.hidden_size, scale.intermediate_size, scale.num_layers, scale.num_heads)
        model = base_model(shape, tokenizer, stable_seed(seed, "base-init"))
        base_plan = TrainPlan(scale.base_steps, scale.base_batch, scale.base_lr)
        losses = {"base": train(model, encode(tokenizer, base_texts), base_plan, pad_id, seed, "base", progress)}
        base_dir = root / "base"
        model.save_pretrained(str(base_dir), safe_serialization=True)
        save_tokenizer(tokenizer, base_dir)
        stages.update()

        adapter_plan = TrainPlan(scale.adapter_steps, scale.adapter_batch, scale.adapter_lr)
        for spec in DEMO_ADAPTERS:
            label = f"{spec.name}/{spec.version}"
            stages.set_postfix_str(label)
            adapter_seed = stable_seed(seed, spec.name, spec.version)
            peft_model = lora_model(copy.deepcopy(model), scale.lora_rank, adapter_seed)
            sequences = encode(tokenizer, topic_texts[spec.topic])
            losses[label] = train(peft_model, sequences, adapter_plan, pad_id, adapter_seed, label, progress)
            layout.save_adapter(peft_model, root / "adapters", spec.name, spec.version, final / "base")
            stages.update()
        for spec in DEMO_ADAPTERS:
            if spec.active:
                layout.point_active(root / "adapters", spec.name, spec.version)

        domains_file = layout.write_domains(root / "adapters", DEMO_DOMAINS)
        for user_id, graph in DEMO_MESHES.items():
            layout.write_mesh(root / "mesh", user_id, graph)
        stages.update()

    layout.write_json(
        root / MANIFEST,
        {
            "generator_version": GENERATOR_VERSION,
            "scale": asdict(scale),
            "seed": seed,
            "adapters": [_describe(spec) for spec in DEMO_ADAPTERS],
            "domains": dict(DEMO_DOMAINS),
            "domains_file": str(domains_file.relative_to(root)),
            "mesh_users": sorted(DEMO_MESHES),
            "prompts": list(DEMO_PROMPTS),
            "final_train_loss": {k: round(v, 4) for k, v in losses.items()},
            "build_wall_s": round(time.perf_counter() - wall0, 1),
            "build_cpu_s": round(time.process_time() - cpu0, 1),
            "torch_threads": BUILD_THREADS,
        },
    )


def _describe(spec: AdapterSpec) -> dict[str, object]:
    from saigon_runtime.adapters.types import AdapterRef

    return {**asdict(spec), "scope": AdapterRef(spec.name, spec.version).scope}
