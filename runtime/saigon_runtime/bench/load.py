"""Load benchmark: N concurrent streaming clients over mixed adapters, with a hot-swap midway.

Starts a real `saigon-runtime serve` process on 127.0.0.1, sends streaming OpenAI-style
completions from concurrent clients (each request names one of the adapters or the base model),
loads a new version of one adapter through the admin API when half the requests are done, and
reports throughput, time to first token and end-to-end latency percentiles, and failures:

    python -m saigon_runtime.bench.load [--clients 32] [--requests 256] [--adapters 16]
        [--max-tokens 32] [--device cpu] [--quick] [--plot load.png] [--json load.json]

Exits non-zero when any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

PROMPTS = (
    "the cat and the dog sail on the river",
    "bake bread and cook a green soup",
    "the user adapter serves the model fast",
    "hello world, the moon and the star",
)


@dataclass
class Outcome:
    index: int
    model: str
    started_s: float  # since the run began
    ttft_s: float | None = None
    latency_s: float = 0.0
    tokens: int = 0
    error: str | None = None


@dataclass
class Swap:
    name: str
    version: str
    at_s: float = 0.0
    took_s: float = 0.0
    in_flight: int = 0
    status: int = 0


@dataclass
class Summary:
    requests: int
    failed: int
    clients: int
    adapters: int
    max_tokens: int
    wall_s: float
    tokens: int
    tokens_per_s: float
    requests_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    latency_p50_ms: float
    latency_p99_ms: float
    swap: dict[str, Any] = field(default_factory=dict)
    server: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = q / 100.0 * (len(ordered) - 1)
    low, high = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def stream_one(
    session: aiohttp.ClientSession, url: str, index: int, model: str, max_tokens: int, t0: float
) -> Outcome:
    outcome = Outcome(index, model, time.perf_counter() - t0)
    body = {
        "model": model,
        "prompt": PROMPTS[index % len(PROMPTS)],
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "seed": index,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    start = time.perf_counter()
    done = False
    try:
        async with session.post(f"{url}/v1/completions", json=body) as response:
            if response.status != 200:
                outcome.error = f"HTTP {response.status}: {(await response.text())[:200]}"
                return outcome
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data: "):
                    continue
                data = line[6:]
                if data == b"[DONE]":
                    done = True
                    break
                event = json.loads(data)
                if "error" in event:
                    outcome.error = f"stream error: {event['error'].get('message')}"
                    return outcome
                if event["choices"] and event["choices"][0]["text"] and outcome.ttft_s is None:
                    outcome.ttft_s = time.perf_counter() - start
                if event.get("usage"):
                    outcome.tokens = int(event["usage"]["completion_tokens"])
    except (TimeoutError, aiohttp.ClientError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
        return outcome
    outcome.latency_s = time.perf_counter() - start
    if not done:
        outcome.error = "stream ended without [DONE]"
    elif outcome.tokens != max_tokens:
        outcome.error = f"{outcome.tokens} tokens instead of {max_tokens}"
    return outcome


async def run_load(
    url: str, admin_token: str, models: list[str], clients: int, requests: int, max_tokens: int,
    swap: Swap, write_new_version: Any,
) -> tuple[list[Outcome], float]:  # fmt: skip
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    outcomes: list[Outcome] = []
    in_flight = 0
    half_done = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=3600)
    connector = aiohttp.TCPConnector(limit=clients + 4)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        t0 = time.perf_counter()

        async def client() -> None:
            nonlocal in_flight
            while True:
                try:
                    index = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                in_flight += 1
                outcome = await stream_one(session, url, index, models[index % len(models)], max_tokens, t0)
                in_flight -= 1
                outcomes.append(outcome)
                if len(outcomes) >= requests // 2:
                    half_done.set()

        async def hot_swap() -> None:
            await half_done.wait()
            path = await asyncio.to_thread(write_new_version)
            swap.at_s, swap.in_flight = time.perf_counter() - t0, in_flight
            started = time.perf_counter()
            async with session.post(
                f"{url}/admin/adapters/load",
                json={"name": swap.name, "version": swap.version, "path": str(path)},
                headers={"Authorization": f"Bearer {admin_token}"},
            ) as response:
                swap.status = response.status
                await response.read()
            swap.took_s = time.perf_counter() - started

        swapper = asyncio.create_task(hot_swap())
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - t0
        await swapper
    return sorted(outcomes, key=lambda o: o.index), wall


def summarize(outcomes: list[Outcome], wall: float, args: argparse.Namespace, swap: Swap) -> Summary:
    ok = [o for o in outcomes if o.error is None]
    tokens = sum(o.tokens for o in ok)
    ttfts = [o.ttft_s * 1000 for o in ok if o.ttft_s is not None]
    latencies = [o.latency_s * 1000 for o in ok]
    return Summary(
        requests=len(outcomes), failed=len(outcomes) - len(ok), clients=args.clients, adapters=args.adapters,
        max_tokens=args.max_tokens, wall_s=round(wall, 3), tokens=tokens, tokens_per_s=round(tokens / wall, 1),
        requests_per_s=round(len(ok) / wall, 2),
        ttft_p50_ms=round(percentile(ttfts, 50), 1), ttft_p99_ms=round(percentile(ttfts, 99), 1),
        latency_p50_ms=round(percentile(latencies, 50), 1), latency_p99_ms=round(percentile(latencies, 99), 1),
        swap=asdict(swap), errors=sorted({o.error for o in outcomes if o.error})[:10],
    )  # fmt: skip


def server_figures(metrics_text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name in ("saigon_batch_size_sum", "saigon_batch_size_count", "saigon_adapter_loads_total",
                               "saigon_adapter_evictions_total", "saigon_adapter_cache_hits_total"):  # fmt: skip
                values[sample.name] = sample.value
    figures = {k.removeprefix("saigon_"): v for k, v in values.items()}
    if values.get("saigon_batch_size_count"):
        figures["mean_batch_size"] = round(values["saigon_batch_size_sum"] / values["saigon_batch_size_count"], 2)
    return figures


def plot(outcomes: list[Outcome], swap: Swap, summary: Summary, hardware: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [o for o in outcomes if o.error is None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    base = [o for o in ok if not o.model.startswith("user_")]
    adapted = [o for o in ok if o.model.startswith("user_")]
    for group, color, label in ((adapted, "#27a", "adapter"), (base, "#888", "base model")):
        left.scatter([o.started_s for o in group], [o.latency_s * 1000 for o in group], s=8, c=color, label=label)
    left.axvline(swap.at_s, color="#c44", linestyle="--", label=f"hot-swap {swap.name} ({swap.took_s * 1000:.0f} ms)")
    left.set_xlabel("request start (s)")
    left.set_ylabel("end-to-end latency (ms)")
    left.set_title(f"{summary.requests} streams, {summary.clients} clients, {summary.failed} failed")
    left.legend(loc="upper left", fontsize=8)
    right.hist([o.ttft_s * 1000 for o in ok if o.ttft_s is not None], bins=40, color="#27a")
    right.set_xlabel("time to first token (ms)")
    right.set_ylabel("requests")
    right.set_title(f"TTFT p50 {summary.ttft_p50_ms:.0f} ms, p99 {summary.ttft_p99_ms:.0f} ms")
    from saigon_runtime.bench.plot import caption

    caption(fig, hardware, "one run: left, one dot per request; right, the spread of TTFT over all requests")
    fig.savefig(out, dpi=110)
    plt.close(fig)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(url: str, server: subprocess.Popen[bytes], limit_s: float = 600.0) -> None:
    deadline = time.monotonic() + limit_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited with {server.returncode} before it was ready")
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.25)
    raise RuntimeError("the server did not become ready in time")


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        return await response.text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent streaming clients")
    parser.add_argument("--requests", type=int, default=256, help="requests in all")
    parser.add_argument("--adapters", type=int, default=16, help="distinct user adapters (the base model is mixed in)")
    parser.add_argument("--max-tokens", type=int, default=32, help="new tokens per request")
    parser.add_argument("--cache-size", type=int, default=8, help="device adapter slots (SAIGON_CACHE_SIZE)")
    parser.add_argument("--max-batch", type=int, default=32, help="requests per engine step")
    parser.add_argument(
        "--slot-wait", type=float, default=300.0,
        help="seconds a request may wait for a device slot before 429 (SAIGON_SLOT_WAIT_TIMEOUT); "
        "with more adapters than slots, waits last as long as the requests holding them",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="a tiny model (smoke run)")
    parser.add_argument("--plot", type=Path, help="write a PNG of latencies over time and TTFTs")
    parser.add_argument("--json", type=Path, help="write the summary as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the generated model and adapters")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="saigon-load-"))
    try:
        return _run(args, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def _run(args: argparse.Namespace, root: Path) -> int:

    from saigon_runtime.bench.engine import Shape
    from saigon_runtime.testing.tiny import install_adapter, make_llama, write_random_adapter

    shape = Shape(hidden=64, layers=2, intermediate=128, vocab=256, heads=4, kv_heads=2, rank=8) if args.quick \
        else Shape()  # fmt: skip
    print(f"building a {shape.layers}-layer model (hidden {shape.hidden}) and {args.adapters} adapters in {root}")
    base = make_llama(root / "base", hidden=shape.hidden, layers=shape.layers, intermediate=shape.intermediate,
                      heads=shape.heads, kv_heads=shape.kv_heads, vocab=shape.vocab, max_positions=1024)  # fmt: skip
    adapters_dir = root / "adapters"
    for i in range(args.adapters):
        source = write_random_adapter(base, root / "src" / f"a{i}", rank=shape.rank, seed=100 + i)
        install_adapter(adapters_dir, f"user_{i}", "v1", source)
    swap = Swap(name="user_0", version="v2")

    def write_new_version() -> Path:
        # As the agent does: write beside the final place, then rename into it.
        staged = write_random_adapter(base, adapters_dir / "user_0" / ".tmp-v2", rank=shape.rank, seed=999)
        final = adapters_dir / "user_0" / "v2"
        staged.rename(final)
        return final

    port, admin_token = free_port(), secrets.token_urlsafe(16)
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAIGON_")}
    env.update({
        "SAIGON_ADMIN_TOKEN": admin_token,
        "SAIGON_MAX_QUEUE": str(args.requests + args.clients),
        "SAIGON_SLOT_WAIT_TIMEOUT": str(args.slot_wait),
    })  # fmt: skip
    command = [
        sys.executable, "-m", "saigon_runtime.cli", "--log-level", "WARNING", "serve", "--port", str(port),
        "--base-model", str(base), "--adapters-dir", str(adapters_dir), "--device", args.device,
        "--cache-size", str(args.cache_size), "--max-batch", str(args.max_batch), "--max-rank", str(shape.rank),
    ]  # fmt: skip
    server = subprocess.Popen(command, env=env)
    try:
        asyncio.run(wait_ready(url, server))
        models = [f"user_{i}" for i in range(args.adapters)] + [base.name]
        # Warm-up (not measured): the first forward passes are slower.
        asyncio.run(run_warmup(url, models))
        outcomes, wall = asyncio.run(
            run_load(url, admin_token, models, args.clients, args.requests, args.max_tokens, swap, write_new_version)
        )
        summary = summarize(outcomes, wall, args, swap)
        summary.server = server_figures(asyncio.run(scrape(url)))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            server.kill()
    print_summary(summary)
    if args.json:
        args.json.write_text(json.dumps(asdict(summary), indent=2))
    if args.plot:
        from saigon_runtime.bench.hardware import describe

        plot(outcomes, swap, summary, describe(args.device), args.plot)
        print(f"plot: {args.plot}")
    return 0 if summary.failed == 0 and swap.status == 200 else 1


async def run_warmup(url: str, models: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(stream_one(session, url, i, m, 4, time.perf_counter()) for i, m in enumerate(models)))


def print_summary(s: Summary) -> None:
    swap = s.swap
    print(f"requests {s.requests}, failed {s.failed}; {s.clients} clients over {s.adapters} adapters + base; "
          f"{s.max_tokens} new tokens each")  # fmt: skip
    print(f"wall {s.wall_s:.2f} s; throughput {s.tokens_per_s:.1f} tokens/s, {s.requests_per_s:.2f} requests/s")
    print(f"time to first token p50 {s.ttft_p50_ms:.1f} ms, p99 {s.ttft_p99_ms:.1f} ms")
    print(f"end-to-end latency   p50 {s.latency_p50_ms:.1f} ms, p99 {s.latency_p99_ms:.1f} ms")
    print(f"hot-swap {swap['name']} -> {swap['version']} at {swap['at_s']:.2f} s: HTTP {swap['status']} in "
          f"{swap['took_s'] * 1000:.1f} ms with {swap['in_flight']} streams in flight")  # fmt: skip
    if s.server:
        print("server: " + ", ".join(f"{k} {v:g}" for k, v in sorted(s.server.items())))
    for error in s.errors:
        print(f"error: {error}")


if __name__ == "__main__":
    sys.exit(main())
