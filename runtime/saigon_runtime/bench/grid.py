"""Grid benchmark at default settings: Saigon against the base-only ceiling and PEFT's mixed batch.

Points: adapters {1, 8, 24, 64} x rank mixes {uniform 16, mixed 8-64} x target sets {attention
only, all-linear, mixed} x two model widths. Each point serves one request per adapter (at least
24 requests), and runs the ceiling (HF `generate` batched, base model only), PEFT's mixed batch
(`generate(adapter_names=...)`) and Saigon (an engine built with `RuntimeConfig()` defaults)
interleaved in this one process, so only the ratios count:

    python -m saigon_runtime.bench.grid [--quick] [--plot docs/bench-grid.png] [--json out.json]
    python -m saigon_runtime.bench.grid --profile   # cProfile of the mixed-ranks, mixed-targets case
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import pstats
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from saigon_runtime.adapters.types import AdapterRef
from saigon_runtime.assembly import build_engine
from saigon_runtime.bench.engine import _interleaved, _interleaved_rounds, _prompts, hf_generate_on, run_engine
from saigon_runtime.bench.hardware import describe
from saigon_runtime.config import RuntimeConfig
from saigon_runtime.engine import threads
from saigon_runtime.engine.engine import Engine
from saigon_runtime.testing.tiny import LLAMA_TARGETS, install_adapter, make_llama, write_random_adapter

ATTENTION = LLAMA_TARGETS[:4]
RANK_MIXES: dict[str, tuple[int, ...]] = {"uniform16": (16,), "mixed8-64": (8, 16, 32, 64)}
TARGET_SETS = ("attention", "all-linear", "mixed")
ADAPTER_COUNTS = (1, 8, 24, 64)
WIDTHS = {"narrow": (256, 688), "wide": (384, 1024)}  # hidden, intermediate
MIN_REQUESTS = 24


@dataclass(frozen=True)
class Point:
    width: str
    adapters: int
    ranks: str
    targets: str

    @property
    def label(self) -> str:
        return f"{self.width} {self.adapters:>2} adapters {self.ranks:<9} {self.targets}"


@dataclass
class Result:
    point: Point
    ceiling: float
    peft_mixed: float
    saigon: float
    # tokens/s of each approach in every interleaved round (medians above)
    rounds: dict[str, list[float]] = field(default_factory=dict)
    # Saigon with no adapter, and what it would reach if each decode step also read its batch's
    # adapter weights once at the measured memory bandwidth and did nothing else (`memory_bound`)
    saigon_base: float = 0.0
    bound: float = 0.0

    def round_ratios(self, baseline: str) -> list[float]:
        """Saigon ÷ `baseline` within each round (both ran back to back): the spread of a ratio."""
        return [s / b for s, b in zip(self.rounds["saigon"], self.rounds[baseline], strict=True)]

    @property
    def vs_ceiling(self) -> float:
        return self.saigon / self.ceiling

    @property
    def vs_peft(self) -> float:
        return self.saigon / self.peft_mixed

    @property
    def bound_vs_ceiling(self) -> float:
        return self.bound / self.ceiling


def adapter_plan(index: int, ranks: str, targets: str) -> tuple[int, tuple[str, ...]]:
    """Rank and targets of the index-th adapter of a point."""
    mix = RANK_MIXES[ranks]
    rank = mix[index % len(mix)]
    if targets == "attention" or (targets == "mixed" and index % 2 == 1):
        return rank, ATTENTION
    return rank, LLAMA_TARGETS


def build_base(root: Path, width: str, layers: int) -> Path:
    hidden, intermediate = WIDTHS[width]
    return make_llama(
        root / f"base-{width}", hidden=hidden, intermediate=intermediate, layers=layers, heads=hidden // 64,
        kv_heads=hidden // 64, vocab=2048, max_positions=1024,
    )  # fmt: skip


def build_adapters(base: Path, root: Path, count: int, ranks: str, targets: str) -> dict[str, Path]:
    adapters_dir = root / "adapters"
    sources: dict[str, Path] = {}
    for i in range(count):
        rank, modules = adapter_plan(i, ranks, targets)
        src = write_random_adapter(base, root / "src" / f"a{i}", rank=rank, alpha=2.0 * rank, targets=modules,
                                   seed=500 + i)  # fmt: skip
        install_adapter(adapters_dir, f"user_{i}", "v1", src)
        sources[f"user_{i}"] = src
    return sources


def default_engine(base: Path, adapters_dir: Path, device: str = "cpu") -> Engine:
    """An engine at the runtime's defaults (SAIGON_* variables apply, as in `serve`)."""
    config = RuntimeConfig.from_env(base_model_dir=base, adapters_dir=adapters_dir, device=device)
    engine = build_engine(config)
    engine.start()
    return engine


def _hf(base: Path, device: str = "cpu") -> Any:
    model = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True, dtype=_dtype(device))
    return model.to(device).eval()  # type: ignore[arg-type]  # transformers types .to() through a decorator


def _dtype(device: str) -> torch.dtype:
    """What the runtime picks by default: float32 on the CPU, half precision on a GPU."""
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _peft(base: Path, sources: dict[str, Path], device: str = "cpu") -> PeftModel:
    names = list(sources)
    peft = PeftModel.from_pretrained(_hf(base, device), sources[names[0]], adapter_name=names[0])
    for name in names[1:]:
        peft.load_adapter(sources[name], adapter_name=name)
    return peft.eval()


def run_point(
    base: Path, root: Path, point: Point, *, prompt_tokens: int, new: int, rounds: int, device: str = "cpu"
) -> Result:  # fmt: skip
    sources = build_adapters(base, root, point.adapters, point.ranks, point.targets)
    n = max(MIN_REQUESTS, point.adapters)
    names = [f"user_{i % point.adapters}" for i in range(n)]
    prompts = _prompts(n, prompt_tokens, 2048, seed=point.adapters)
    base_model, peft = _hf(base, device), _peft(base, sources, device)
    engine = default_engine(base, root / "adapters", device)
    try:
        per_round = _interleaved_rounds(
            {
                "ceiling": lambda: hf_generate_on(engine, base_model, prompts, new),
                "peft_mixed": lambda: hf_generate_on(engine, peft, prompts, new, adapter_names=names),
                "saigon": lambda: run_engine(engine, prompts, names, new),
                "saigon_base": lambda: run_engine(engine, prompts, [None] * n, new),
            },
            rounds,
        )
        run_bytes = adapter_bytes_per_run(engine, names, new)
        bandwidth = engine.call(memory_bandwidth)
    finally:
        engine.stop()
    rates = {k: statistics.median(v) for k, v in per_round.items()}
    tokens = n * new
    bound = tokens / (tokens / rates["saigon_base"] + run_bytes / bandwidth)
    return Result(point, rates["ceiling"], rates["peft_mixed"], rates["saigon"], per_round, rates["saigon_base"], bound)


def adapter_bytes_per_run(engine: Engine, names: Sequence[str], new: int) -> int:
    """Adapter bytes one run must read at least: each wave of at most `max_batch_size` rows reads
    each of its distinct adapters once per decode step."""
    size = engine.config.max_batch_size
    total = 0
    for start in range(0, len(names), size):
        wave = set(names[start : start + size])
        total += new * sum(engine.adapters.host_adapter(AdapterRef(name, "v1")).nbytes for name in wave)
    return total


def memory_bandwidth(size: int = 512 << 20) -> float:
    """Bytes per second of a streaming read of a buffer far larger than the caches (best of 3),
    on the calling thread's torch threads."""
    buffer = torch.ones(size // 4)
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        buffer.sum()
        best = max(best, size / (time.perf_counter() - start))
    return best


def points(quick: bool) -> list[Point]:
    if quick:  # one width, the two ends of the adapter counts, every rank mix and target set
        grid = itertools.product(["narrow"], (8, 24), RANK_MIXES, TARGET_SETS)
    else:
        grid = itertools.product(WIDTHS, ADAPTER_COUNTS, RANK_MIXES, TARGET_SETS)
    return [Point(w, a, r, t) for w, a, r, t in grid]


def run_grid(
    selected: Sequence[Point], *, layers: int, prompt_tokens: int, new: int, rounds: int, device: str = "cpu"
) -> list[Result]:  # fmt: skip
    results = []
    print(f"{'point':<48} {'ceiling':>8} {'peft':>8} {'saigon':>8} {'÷ceil':>6} {'bound':>6} {'÷peft':>6}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        bases = {w: build_base(Path(tmp), w, layers) for w in {p.width for p in selected}}
        for i, point in enumerate(selected):
            r = run_point(bases[point.width], Path(tmp) / f"p{i}", point, prompt_tokens=prompt_tokens, new=new,
                          rounds=rounds, device=device)  # fmt: skip
            results.append(r)
            print(
                f"{point.label:<48} {r.ceiling:8.1f} {r.peft_mixed:8.1f} {r.saigon:8.1f} "
                f"{r.vs_ceiling:6.2f} {r.bound_vs_ceiling:6.2f} {r.vs_peft:6.2f}",
                flush=True,
            )
    return results


def profile_mixed(layers: int, prompt_tokens: int, new: int, top: int) -> None:
    """cProfile of Saigon on 24 adapters, ranks 8/16/32, half attention-only, half all-linear."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = build_base(root, "wide", layers)
        adapters_dir = root / "adapters"
        for i in range(24):
            rank, modules = (8, 16, 32)[i % 3], ATTENTION if i % 2 else LLAMA_TARGETS
            src = write_random_adapter(base, root / "src" / f"a{i}", rank=rank, alpha=2.0 * rank, targets=modules,
                                       seed=700 + i)  # fmt: skip
            install_adapter(adapters_dir, f"user_{i}", "v1", src)
        names = [f"user_{i}" for i in range(24)]
        prompts = _prompts(24, prompt_tokens, 2048, seed=9)
        base_model = _hf(base)
        engine = default_engine(base, adapters_dir)
        rates = _interleaved(
            {
                "ceiling": lambda: hf_generate_on(engine, base_model, prompts, new),
                "saigon": lambda: run_engine(engine, prompts, names, new),
            },
            2,
        )
        print(f"tok/s ceiling {rates['ceiling']:.1f}  saigon {rates['saigon']:.1f}  "
              f"ratio {rates['saigon'] / rates['ceiling']:.2f}", flush=True)  # fmt: skip
        profiler = cProfile.Profile()
        # The engine thread does the work: profile it from inside, around one whole wave.
        engine.call(profiler.enable)
        run_engine(engine, prompts, names, new)
        engine.call(profiler.disable)
        engine.stop()
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> list[Result]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="12 points on the narrow model (the full grid is 48)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", help="run only points whose label contains this text")
    ap.add_argument("--profile", action="store_true", help="profile the mixed-ranks, mixed-targets case instead")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    threads.hand_over()  # the engine's thread runs every approach: see `threads`
    torch.manual_seed(0)
    if args.profile:
        profile_mixed(args.layers, args.prompt_tokens, args.new_tokens, top=25)
        return []
    selected = [p for p in points(args.quick) if args.only is None or args.only in p.label]
    results = run_grid(
        selected, layers=args.layers, prompt_tokens=args.prompt_tokens, new=args.new_tokens, rounds=args.rounds,
        device=args.device,
    )  # fmt: skip
    eight_plus = [r for r in results if r.point.adapters >= 8]
    if eight_plus:
        print(
            f"worst ÷ceiling at >=8 adapters: {min(r.vs_ceiling for r in eight_plus):.2f} (target 0.75); "
            f"worst ÷PEFT mixed: {min(r.vs_peft for r in eight_plus):.2f} (target 2.5)",
            flush=True,
        )
    if args.json:
        rows = [{**asdict(r.point), "ceiling": r.ceiling, "peft_mixed": r.peft_mixed, "saigon": r.saigon,
                 "saigon_base": r.saigon_base, "memory_bound": r.bound, "vs_ceiling": r.vs_ceiling,
                 "bound_vs_ceiling": r.bound_vs_ceiling, "vs_peft": r.vs_peft, "rounds": r.rounds}
                for r in results]  # fmt: skip
        args.json.write_text(json.dumps({"hardware": describe(args.device), "points": rows}, indent=2))
    if args.plot:
        from saigon_runtime.bench.plot import plot_grid

        ratios = [(r.point.label, r.round_ratios("ceiling"), r.round_ratios("peft_mixed")) for r in results]
        plot_grid(ratios, describe(args.device), args.plot, bounds=[r.bound_vs_ceiling for r in results])
        print(f"plot written to {args.plot}")
    return results


if __name__ == "__main__":
    main()
