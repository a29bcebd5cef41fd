"""Engine benchmark: Saigon vs the base-only ceiling, PEFT one-at-a-time and PEFT mixed batches.

Everything runs in ONE process on the same model and prompts, and the report is given
as ratios, because absolute numbers on shared machines are noisy:

    python -m saigon_runtime.bench.engine [--device cuda] [--quick] [--plot out.png] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from peft import PeftModel
from transformers import AutoModelForCausalLM

from saigon_runtime.adapters.types import AdapterRef
from saigon_runtime.assembly import build_engine
from saigon_runtime.bench.hardware import describe
from saigon_runtime.config import RuntimeConfig
from saigon_runtime.engine import threads
from saigon_runtime.engine.engine import Engine
from saigon_runtime.engine.types import GenerationRequest, SamplingParams
from saigon_runtime.testing.tiny import install_adapter, make_llama, write_random_adapter


@dataclass
class Shape:
    hidden: int = 512
    layers: int = 8
    intermediate: int = 1376
    vocab: int = 4096
    heads: int = 8
    kv_heads: int = 8
    rank: int = 16


@dataclass
class Report:
    rows: dict[str, float] = field(default_factory=dict)
    notes: dict[str, object] = field(default_factory=dict)
    # tokens/s of every round behind a median (the plot's spread), by approach
    samples: dict[str, list[float]] = field(default_factory=dict)
    prefix: str = ""

    def add(self, key: str, value: float) -> None:
        key = self.prefix + key
        self.rows[key] = value
        print(f"  {key:<52} {value:10.2f}", flush=True)


def _prompts(n: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, vocab, (length,), generator=g).tolist() for _ in range(n)]


def _rates(fn: Callable[[], int], repeats: int) -> list[float]:
    """Tokens per second of each of `repeats` runs (after one warm-up)."""
    fn()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = fn()
        rates.append(tokens / (time.perf_counter() - start))
    return rates


def _best(fn: Callable[[], int], repeats: int) -> float:
    """Tokens per second of the best of `repeats` runs (after one warm-up)."""
    return max(_rates(fn, repeats))


class Bench:
    def __init__(self, root: Path, shape: Shape, device: str, dtype: torch.dtype, adapters: int) -> None:
        self.root, self.shape, self.device, self.dtype = root, shape, torch.device(device), dtype
        self.base = make_llama(
            root / "base", hidden=shape.hidden, layers=shape.layers, intermediate=shape.intermediate,
            heads=shape.heads, kv_heads=shape.kv_heads, vocab=shape.vocab, max_positions=1024, dtype=dtype,
        )  # fmt: skip
        self.adapters_dir = root / "adapters"
        self.sources: list[Path] = []
        for i in range(adapters):
            src = write_random_adapter(self.base, root / "src" / f"a{i}", rank=shape.rank, alpha=2.0 * shape.rank,
                                       seed=100 + i)  # fmt: skip
            install_adapter(self.adapters_dir, f"user_{i}", "v1", src)
            self.sources.append(src)

    def engine(self, max_loras: int, max_batch: int = 64) -> Engine:
        config = RuntimeConfig(
            base_model_dir=self.base, adapters_dir=self.adapters_dir, device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."), max_loras=max_loras, max_cpu_loras=256,
            max_rank=self.shape.rank, max_batch_size=max_batch, max_queue=100_000, slot_wait_timeout_s=600,
        )  # fmt: skip
        engine = build_engine(config)
        engine.start()
        return engine

    def hf_model(self) -> Any:
        model = AutoModelForCausalLM.from_pretrained(self.base, dtype=self.dtype, use_safetensors=True)
        return model.to(self.device).eval()  # type: ignore[arg-type]

    def peft_model(self, n: int) -> PeftModel:
        peft = PeftModel.from_pretrained(self.hf_model(), self.sources[0], adapter_name="user_0")
        for i in range(1, n):
            peft.load_adapter(self.sources[i], adapter_name=f"user_{i}")
        return peft.eval()


def engine_tokens(
    engine: Engine, prompts: list[list[int]], adapters: Sequence[str | None], new: int
) -> list[list[int]]:
    sampling = SamplingParams(temperature=0.0, max_new_tokens=new, ignore_eos=True)
    handles = [
        engine.submit(GenerationRequest(p, AdapterRef(a, "v1") if a else None, sampling))
        for p, a in zip(prompts, adapters, strict=True)
    ]
    return [h.result(3600).token_ids for h in handles]


def run_engine(engine: Engine, prompts: list[list[int]], adapters: Sequence[str | None], new: int) -> int:
    return sum(len(t) for t in engine_tokens(engine, prompts, adapters, new))


def greedy_agreement(engine: Engine, peft: PeftModel, prompts: list[list[int]], names: list[str], new: int) -> float:
    """The share of requests whose greedy tokens equal PEFT's for the same adapter, each run alone."""
    ours = engine_tokens(engine, prompts, names, new)
    same = 0
    for p, name, tokens in zip(prompts, names, ours, strict=True):
        peft.set_adapter(name)
        ids = torch.tensor([p], device=next(peft.parameters()).device)
        with torch.inference_mode():
            out = peft.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                                min_new_tokens=new, do_sample=False, pad_token_id=1)  # fmt: skip
        same += out[0, len(p) :].tolist() == tokens
    return same / len(prompts)


def hf_generate(model: Any, prompts: list[list[int]], new: int, **kwargs: object) -> int:
    ids = torch.tensor(prompts, device=next(model.parameters()).device)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                             min_new_tokens=new, do_sample=False, pad_token_id=1, **kwargs)  # fmt: skip
    return int((out.shape[1] - ids.shape[1]) * out.shape[0])


def hf_generate_on(engine: Engine, model: Any, prompts: list[list[int]], new: int, **kwargs: object) -> int:
    """`hf_generate` on the engine's thread, with the engine's torch threads (see `threads`): a
    baseline on another thread would start a second OpenMP team and slow both sides."""
    return engine.call(partial(hf_generate, model, prompts, new, **kwargs))


def _interleaved(fns: dict[str, Callable[[], int]], rounds: int) -> dict[str, float]:
    """Median tokens/s of each approach over `rounds` rounds that run every approach in turn.

    Interleaving and medians keep a slow or fast spell of a shared machine from favouring
    whichever approach happened to run during it.
    """
    return {k: statistics.median(v) for k, v in _interleaved_rounds(fns, rounds).items()}


def _interleaved_rounds(fns: dict[str, Callable[[], int]], rounds: int) -> dict[str, list[float]]:
    """Tokens/s of each approach in each of `rounds` rounds that run every approach in turn."""
    for fn in fns.values():
        fn()  # warm-up
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            start = time.perf_counter()
            tokens = fn()
            rates[key].append(tokens / (time.perf_counter() - start))
    return rates


def compare(
    bench: Bench, report: Report, prompts: list[list[int]], names: list[str], new: int, rounds: int,
    one_at_a_time: bool = True,
) -> dict[str, float]:  # fmt: skip
    """(a) the base-only ceiling, (b) the original one-at-a-time design, (c) PEFT mixed batches and
    (d) Saigon, on one model and one set of prompts, interleaved."""
    base_model = bench.hf_model()
    peft = bench.peft_model(len(names))
    engine = bench.engine(max_loras=max(64, len(names)))
    n = len(prompts)
    rounds_by_approach = _interleaved_rounds(
        {
            "ceiling": lambda: hf_generate_on(engine, base_model, prompts, new),
            "peft_mixed": lambda: hf_generate_on(engine, peft, prompts, new, adapter_names=names),
            "saigon": lambda: run_engine(engine, prompts, names, new),
            "saigon_base": lambda: run_engine(engine, prompts, [None] * n, new),
        },
        rounds,
    )
    medians = {k: statistics.median(v) for k, v in rounds_by_approach.items()}
    for key, values in rounds_by_approach.items():
        report.samples[report.prefix + key] = values
    agreement = greedy_agreement(engine, peft, prompts[:8], names[:8], new)
    report.add("% requests with PEFT's greedy tokens (8 checked)", 100 * agreement)
    report.add("tok/s base model alone, batched (ceiling)", medians["ceiling"])

    def sequential() -> int:
        total = 0
        for p, name in zip(prompts, names, strict=True):
            peft.set_adapter(name)
            total += hf_generate(peft, [p], new)
        return total

    if one_at_a_time:
        medians["original"] = _best(lambda: engine.call(sequential), 1)
        report.samples[report.prefix + "original"] = [medians["original"]]
        report.add("tok/s original design: PEFT set_adapter+generate, 1 by 1", medians["original"])
    report.add("tok/s PEFT mixed batch generate(adapter_names=...)", medians["peft_mixed"])
    report.add("tok/s Saigon, mixed adapters", medians["saigon"])
    report.add("tok/s Saigon, base model only", medians["saigon_base"])
    report.add("ratio Saigon / base ceiling", medians["saigon"] / medians["ceiling"])
    if one_at_a_time:
        report.add("ratio Saigon / original one-at-a-time", medians["saigon"] / medians["original"])
    report.add("ratio Saigon / PEFT mixed batch", medians["saigon"] / medians["peft_mixed"])
    engine.stop()
    start = time.perf_counter()
    peft.load_adapter(bench.sources[-1], adapter_name="cold")
    report.add("ms PEFT load_adapter (cold)", (time.perf_counter() - start) * 1000)
    gc.collect()
    return medians


def main(argv: list[str] | None = None) -> Report:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a small model and fewer runs (smoke)")
    ap.add_argument("--large", action="store_true", help="add a ~1B LLaMA-shaped fp16 model with 64 adapters (GPU)")
    ap.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="default: float32 on CPU, else float16")
    ap.add_argument("--soak", type=int, default=0, help="requests for the memory soak over 200 adapters")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    threads.hand_over()  # the engine's thread runs every approach: see `threads`
    torch.manual_seed(0)
    quick = Shape(hidden=128, layers=2, intermediate=256, vocab=512, heads=4, kv_heads=4, rank=8)
    shape = quick if args.quick else Shape()
    dtype = getattr(torch, args.dtype) if args.dtype else torch.float32 if args.device == "cpu" else torch.float16
    report = Report()
    report.notes.update(
        hardware=describe(args.device),
        device=args.device,
        dtype=str(dtype).removeprefix("torch."),
        torch_threads=threads.engine_threads(),
        shape=shape.__dict__,
        requests=args.requests,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
    )
    n, new = args.requests, args.new_tokens
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp), shape, args.device, dtype, adapters=max(64, n))
        prompts = _prompts(n, args.prompt_tokens, shape.vocab)
        names = [f"user_{i}" for i in range(n)]
        print(f"== throughput: {n} requests, one adapter each, {args.prompt_tokens}+{new} tokens, greedy", flush=True)

        compare(bench, report, prompts, names, new, args.repeats)
        engine = bench.engine(max_loras=max(64, n))

        print("== distinct adapters sweep (64 requests)", flush=True)
        sweep_prompts = _prompts(64, args.prompt_tokens, shape.vocab, seed=1)
        sweep: dict[int, list[float]] = {}
        for distinct in (1, 4, 16, 64):
            adapters = [f"user_{i % distinct}" for i in range(64)]
            runs = max(1, args.repeats - 1)
            sweep[distinct] = _rates(partial(run_engine, engine, sweep_prompts, adapters, new), runs)
            report.add(f"tok/s Saigon, 64 requests over {distinct} adapters", max(sweep[distinct]))
            report.samples[f"sweep {distinct}"] = sweep[distinct]
        engine.stop()

        print("== cold load into a slot", flush=True)
        engine = bench.engine(max_loras=4)
        loads = []
        for i in range(8):
            ref = AdapterRef(f"user_{i}", "v1")
            engine.adapters.host_adapter(ref)  # from disk into host memory first: we time the slot copy
            engine.adapters.pool.warm(engine.adapters.host_adapter(ref))
            loads.append(engine.adapters.pool.counters.last_load_seconds * 1000)
        size_mb = engine.adapters.host_adapter(AdapterRef("user_0", "v1")).nbytes / 1e6
        report.add(f"ms cold load of a {size_mb:.1f} MB adapter into a slot (median)", statistics.median(loads))
        engine.stop()

        print("== cache cliff: working set twice the device slots", flush=True)
        # A stream of 4n requests cycling over n adapters, batches of at most n rows.
        wave = _prompts(4 * n, args.prompt_tokens, shape.vocab, seed=2)
        cyc = [f"user_{i % n}" for i in range(4 * n)]
        # One engine alive at a time: two engine threads would be two OpenMP teams (see `threads`).
        cliff_runs: dict[str, list[float]] = {"resident": [], "cliff": []}
        evictions = 0
        for _ in range(max(1, args.repeats - 1)):
            for key, slots in (("resident", n), ("cliff", n // 2)):
                engine = bench.engine(max_loras=slots, max_batch=n)
                cliff_runs[key].extend(_rates(partial(run_engine, engine, wave, cyc, new), 1))
                if key == "cliff":
                    evictions = engine.adapters.stats().evictions
                engine.stop()
        resident, cliff = statistics.median(cliff_runs["resident"]), statistics.median(cliff_runs["cliff"])
        report.add(f"tok/s all {n} adapters resident", resident)
        report.add(f"tok/s {n} adapters over {n // 2} slots", cliff)
        report.add("ratio cache cliff / all resident", cliff / resident)
        report.notes["cliff_evictions"] = evictions

        if args.soak:
            soak(bench, report, args.soak, shape)

    if args.large:
        large_model(report, args.device, args.prompt_tokens, new, args.repeats)

    if args.json:
        args.json.write_text(
            json.dumps({"rows": report.rows, "notes": report.notes, "samples": report.samples}, indent=2)
        )
    if args.plot:
        from saigon_runtime.bench.plot import plot_engine

        plot_engine(report.samples, sweep, str(report.notes["hardware"]), args.plot)
        print(f"plot written to {args.plot}")
    return report


def large_model(report: Report, device: str, prompt_tokens: int, new: int, repeats: int) -> None:
    """A ~1B LLaMA-shaped model in fp16 with 64 adapters, 64 requests (for a GPU)."""
    shape = Shape(hidden=2048, layers=16, intermediate=5504, vocab=32000, heads=16, kv_heads=16, rank=16)
    print("== ~1B LLaMA-shaped model, fp16, 64 adapters of rank 16, 64 requests", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp), shape, device, torch.float16, adapters=64)
        prompts = _prompts(64, prompt_tokens, shape.vocab, seed=4)
        names = [f"user_{i}" for i in range(64)]
        report.prefix = "1B "
        compare(bench, report, prompts, names, new, repeats, one_at_a_time=False)
        report.prefix = ""


def soak(bench: Bench, report: Report, requests: int, shape: Shape) -> None:
    """Memory stays flat while `requests` requests cycle through 200 adapters."""
    print(f"== memory soak: {requests} requests cycling through 200 adapters", flush=True)
    for i in range(len(bench.sources), 200):
        install_adapter(bench.adapters_dir, f"user_{i}", "v1", bench.sources[i % len(bench.sources)])
    engine = bench.engine(max_loras=16)
    engine.adapters.max_cpu_loras = 32
    prompts = _prompts(32, 8, shape.vocab, seed=3)
    rss: list[float] = []
    sampling = SamplingParams(temperature=0.0, max_new_tokens=2, ignore_eos=True)
    done = 0
    while done < requests:
        handles = [
            engine.submit(GenerationRequest(prompts[j], AdapterRef(f"user_{(done + j) % 200}", "v1"), sampling))
            for j in range(min(32, requests - done))
        ]
        for h in handles:
            h.result(600)
        done += len(handles)
        if done % 1000 < 32 or done >= requests:
            rss.append(_rss_mb())
    engine.stop()
    report.add("MB RSS after the first 1,000 soak requests", rss[0])
    report.add(f"MB RSS after {requests} soak requests", rss[-1])
    report.notes["soak_rss_mb"] = rss


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
