#!/usr/bin/env python
"""Benchmark (not a test): what reading and validating adapters costs the requests beside it.

One engine over the promotion benchmark's base model serves 4-token completions for a user
adapter, one after another, in three settings that alternate for `--rounds` rounds (this
machine is noisy):

- idle: nothing else runs;
- in a thread: a thread of the same process loads the rank-80 test LoRA (`load_adapter`, as an
  admin load's prepare step does) in a loop, at `--nice`;
- in a process: a separate process does the same at `--nice`.

Prints p50/p99 of each setting and the ratios against idle. A loading thread shares the
interpreter lock with the engine's and the event loop's threads, whatever its CPU priority; a
process shares only the CPU.

    .venv/bin/python scripts/load_contention.py
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from saigon_contract.background import lower_this_thread  # noqa: E402
from saigon_e2e.artifacts import make_base, make_lora  # noqa: E402
from saigon_runtime.adapters.format import load_adapter  # noqa: E402
from saigon_runtime.adapters.types import ModuleShape  # noqa: E402
from saigon_runtime.assembly import build_engine  # noqa: E402
from saigon_runtime.bench.load import percentile  # noqa: E402
from saigon_runtime.config import RuntimeConfig  # noqa: E402
from saigon_runtime.engine import threads  # noqa: E402
from saigon_runtime.engine.types import GenerationRequest, SamplingParams  # noqa: E402
from saigon_runtime.testing.tiny import install_adapter  # noqa: E402


def _load_forever(lora: Path, shapes: dict[str, ModuleShape], nice: int, stop: Callable[[], bool]) -> None:
    lower_this_thread(nice)
    threads.hand_over()  # torch on one thread here, as on the runtime's loading threads
    while not stop():
        load_adapter(lora, name="user_loading", version="v1", shapes=shapes, max_rank=256)


def _process_main(lora: Path, shapes: dict[str, ModuleShape], nice: int, ready: Any, stop: Any) -> None:
    ready.set()
    _load_forever(lora, shapes, nice, stop.is_set)


def percentiles(latencies: list[float]) -> dict[str, float]:
    return {
        "requests": len(latencies),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="of each setting in each round")
    parser.add_argument("--nice", type=int, default=10, help="CPU priority of the loading thread or process")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    threads.hand_over()  # before any torch op here: only the engine's thread runs torch on several

    work = Path(tempfile.mkdtemp(prefix="saigon-contention-"))
    base = make_base(work / "base")
    lora = make_lora(base, work / "lora", rank=80, seed=1)
    install_adapter(work / "adapters", "user_served", "v1", make_lora(base, work / "served", rank=4, seed=2))
    engine = build_engine(RuntimeConfig(base_model_dir=base, adapters_dir=work / "adapters", device="cpu"))
    engine.start()
    try:
        shapes = engine.adapters.shapes
        ids = engine.tokenizer("the cat sat")["input_ids"]
        sampling = SamplingParams(temperature=0.0, max_new_tokens=4, ignore_eos=True)
        ref = engine.adapters.resolve("served").adapter

        def serve(seconds: float) -> list[float]:
            latencies = []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                started = time.perf_counter()
                engine.generate(GenerationRequest(ids, ref, sampling), 60)
                latencies.append(time.perf_counter() - started)
            return latencies

        results: dict[str, list[float]] = {"idle": [], "thread": [], "process": []}
        context = multiprocessing.get_context("spawn")
        for _ in range(args.rounds):
            results["idle"] += serve(args.seconds)
            stopped = threading.Event()
            thread = threading.Thread(target=_load_forever, args=(lora, shapes, args.nice, stopped.is_set))
            thread.start()
            results["thread"] += serve(args.seconds)
            stopped.set()
            thread.join()
            ready, stop = context.Event(), context.Event()
            process = context.Process(target=_process_main, args=(lora, shapes, args.nice, ready, stop))
            process.start()
            ready.wait(120)  # its imports done: from here on it loads
            results["process"] += serve(args.seconds)
            stop.set()
            process.join()
        out: dict[str, object] = {name: percentiles(values) for name, values in results.items()}
        idle = out["idle"]
        for name in ("thread", "process"):
            out[f"{name}_p99_ratio"] = round(out[name]["p99_ms"] / idle["p99_ms"], 2)  # type: ignore[index]
            out[f"{name}_p50_ratio"] = round(out[name]["p50_ms"] / idle["p50_ms"], 2)  # type: ignore[index]
        out["nice"] = args.nice
        out["cpus"] = os.cpu_count()
        print(json.dumps(out, indent=2))
        if args.json:
            args.json.write_text(json.dumps(out, indent=2) + "\n")
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
