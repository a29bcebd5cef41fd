"""Routing benchmark: user affinity (consistent hashing) vs round-robin, through a real HAProxy.

Starts N real `saigon-runtime serve` processes (each with its own copy of the adapters, as pods
have) and an HAProxy in front of them, configured by the operator's own renderer
(saigon_contract.haproxy) with static servers instead of DNS. Users hold sessions:
`--active` users at a time each send `--requests-per-user` requests one after another, so
each runtime sees about active/N users at once with affinity and all `--active` users with
round-robin. Each mode runs on freshly started runtimes (no hot set carried over); with
`--rounds`, the modes alternate and each figure is the median over rounds:

    python -m saigon_runtime.bench.routing [--runtimes 3] [--users 300] [--max-loras 16]
        [--active 48] [--requests-per-user 6] [--max-tokens 8] [--rounds 1] [--quick]
        [--plot routing.png] [--json routing.json]

Reports throughput, p50/p99 latency and the adapter cache hit rate (from the runtimes' own
/metrics) for both modes, and their ratios. Needs `haproxy` on PATH (Debian package haproxy).
Exits non-zero when any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from saigon_contract.haproxy import (
    DEFAULT_USER_HEADER,
    REPLICA_HEADER,
    RouterConfig,
    StaticServer,
    StaticServers,
    render,
)

from saigon_runtime.bench.hardware import describe
from saigon_runtime.bench.load import free_port, percentile

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

USER_HEADER = DEFAULT_USER_HEADER
PROMPT = "the cat and the dog sail on the river"


def user_name(user: int) -> str:
    return f"u{user}"


def adapter_of(user: int) -> str:
    return f"user_{user_name(user)}"


# ---- the fleet: runtimes and the router -------------------------------------------------------


@dataclass
class Runtime:
    name: str
    port: int
    adapters_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Fleet:
    runtimes: list[Runtime]
    router_port: int
    router_health_port: int
    router: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.router_port}"


def build_assets(root: Path, users: int, *, quick: bool) -> Path:
    """A LLaMA-shaped base model and one adapter per user under root/src; returns the base dir."""
    from saigon_runtime.testing.tiny import make_llama, write_random_adapter

    if quick:
        base = make_llama(root / "base", hidden=64, layers=2, intermediate=128, heads=4, kv_heads=2, vocab=256)
        rank = 4
    else:
        base = make_llama(root / "base", hidden=256, layers=4, intermediate=688, heads=8, kv_heads=4, vocab=2048)
        rank = 16
    for user in range(users):
        write_random_adapter(base, root / "src" / adapter_of(user), rank=rank, seed=1000 + user)
    return base


def install_copies(root: Path, runtimes: int) -> list[Path]:
    """One adapters directory per runtime (pods have their own volumes; hot sets stay apart)."""
    from saigon_runtime.testing.tiny import install_adapter

    dirs = []
    for i in range(runtimes):
        target = root / f"adapters-{i}"
        for source in sorted((root / "src").iterdir()):
            install_adapter(target, source.name, "v1", source)
        dirs.append(target)
    return dirs


def start_runtime(runtime: Runtime, base: Path, *, max_loras: int, max_batch: int = 32, max_rank: int = 16) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAIGON_")}
    env.update({"SAIGON_SLOT_WAIT_TIMEOUT": "120", "SAIGON_MAX_QUEUE": "4096"})
    command = [
        sys.executable, "-m", "saigon_runtime.cli", "--log-level", "WARNING", "serve", "--port", str(runtime.port),
        "--base-model", str(base), "--adapters-dir", str(runtime.adapters_dir), "--device", "cpu",
        "--cache-size", str(max_loras), "--max-batch", str(max_batch), "--max-rank", str(max_rank),
    ]  # fmt: skip
    runtime.log_path.parent.mkdir(parents=True, exist_ok=True)
    with runtime.log_path.open("ab") as log:
        runtime.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_process(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout_s: float = 60) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until(url: str, process: subprocess.Popen[bytes] | None, limit_s: float = 300) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process behind {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (an http:// URL built here)
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {limit_s}s")


def router_config(fleet: Fleet, *, affinity: bool = True, hash_balance_factor: int = 150) -> str:
    # The operator renders the cluster's configuration with the same function (DNS servers there).

    servers = StaticServers(tuple(StaticServer(r.name, "127.0.0.1", r.port) for r in fleet.runtimes))
    config = RouterConfig(
        port=fleet.router_port,
        health_port=fleet.router_health_port,
        bind_address="127.0.0.1",
        affinity=affinity,
        hash_balance_factor=hash_balance_factor,
        check_interval_ms=500,
    )
    return render(config, servers)


def start_router(fleet: Fleet, config_path: Path, config_text: str) -> None:
    fleet.router = start_haproxy(config_path, config_text, fleet.router_health_port)


def start_haproxy(config_path: Path, config_text: str, health_port: int) -> subprocess.Popen[bytes]:
    """HAProxy with this configuration, once its health endpoint answers."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    config_path.write_text(config_text)
    checked = subprocess.run([haproxy, "-c", "-q", "-f", str(config_path)], capture_output=True, text=True)
    if checked.returncode != 0:
        raise RuntimeError(f"haproxy rejected its configuration: {checked.stdout}{checked.stderr}")
    # -db: stay in the foreground; -W: master-worker, so SIGTERM stops it cleanly.
    process = subprocess.Popen([haproxy, "-W", "-db", "-q", "-f", str(config_path)])
    wait_until(f"http://127.0.0.1:{health_port}/healthz", process, 30)
    return process


@contextmanager
def running_fleet(
    root: Path, base: Path, adapters_dirs: Sequence[Path], *, max_loras: int, affinity: bool = True,
    hash_balance_factor: int = 150, max_rank: int = 16,
) -> Iterator[Fleet]:  # fmt: skip
    """Runtimes (started together, waited for together) and the router in front of them."""
    runtimes = [
        Runtime(f"rt{i + 1}", free_port(), adapters_dir, root / "logs" / f"rt{i + 1}.log")
        for i, adapters_dir in enumerate(adapters_dirs)
    ]
    fleet = Fleet(runtimes, free_port(), free_port())
    try:
        for runtime in runtimes:
            (runtime.adapters_dir / ".saigon-hotset.json").unlink(missing_ok=True)
            start_runtime(runtime, base, max_loras=max_loras, max_rank=max_rank)
        for runtime in runtimes:
            wait_until(f"{runtime.url}/readyz", runtime.process)
        start_router(fleet, root / "haproxy.cfg", router_config(fleet, affinity=affinity,
                                                                  hash_balance_factor=hash_balance_factor))  # fmt: skip
        wait_until(f"{fleet.url}/readyz", fleet.router, 30)
        yield fleet
    finally:
        stop_process(fleet.router, timeout_s=10)
        for runtime in runtimes:
            stop_process(runtime.process)


# ---- the clients --------------------------------------------------------------------------------


@dataclass
class Outcome:
    user: int
    seq: int
    started_s: float
    latency_s: float = 0.0
    replica: str | None = None
    attempts: int = 0
    tokens: int = 0
    error: str | None = None


async def send(
    session: aiohttp.ClientSession, url: str, user: int, seq: int, *, max_tokens: int, affinity: bool, t0: float,
    retries: int = 1,
) -> Outcome:  # fmt: skip
    """One completion for `user` through the router; a failed attempt is retried `retries` times."""
    outcome = Outcome(user, seq, time.perf_counter() - t0)
    body = {"model": adapter_of(user), "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0,
            "user": user_name(user), "ignore_eos": True}  # fmt: skip
    headers = {USER_HEADER: user_name(user)} if affinity else {}
    start = time.perf_counter()
    for attempt in range(retries + 1):
        outcome.attempts = attempt + 1
        try:
            async with session.post(f"{url}/v1/completions", json=body, headers=headers) as response:
                outcome.replica = response.headers.get(REPLICA_HEADER)
                if response.status != 200:
                    outcome.error = f"HTTP {response.status}: {(await response.text())[:200]}"
                    continue
                data = await response.json()
                outcome.tokens = int(data["usage"]["completion_tokens"])
                outcome.error = None
                break
        except (TimeoutError, aiohttp.ClientError) as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
    outcome.latency_s = time.perf_counter() - start
    return outcome


def sessions(users: int, requests_per_user: int, seed: int = 0) -> list[int]:
    """The order in which users start their sessions (each user once)."""
    order = list(range(users))
    random.Random(seed).shuffle(order)
    return order


async def run_sessions(
    url: str, order: Sequence[int], *, requests_per_user: int, active: int, max_tokens: int, affinity: bool,
    first_seq: int = 0,
) -> tuple[list[Outcome], float]:  # fmt: skip
    """`active` concurrent sessions; each takes the next user and sends their requests in turn."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for user in order:
        queue.put_nowait(user)
    outcomes: list[Outcome] = []
    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=active + 4)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        t0 = time.perf_counter()

        async def client() -> None:
            while True:
                try:
                    user = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                for seq in range(first_seq, first_seq + requests_per_user):
                    outcomes.append(
                        await send(session, url, user, seq, max_tokens=max_tokens, affinity=affinity, t0=t0)
                    )

        await asyncio.gather(*(client() for _ in range(active)))
        wall = time.perf_counter() - t0
    return outcomes, wall


async def warm_up(fleet: Fleet) -> None:
    """The first forward passes of a process are slow: one base-model request per runtime."""
    async with aiohttp.ClientSession() as session:
        for runtime in fleet.runtimes:
            async with session.get(f"{runtime.url}/v1/models") as response:
                base = (await response.json())["data"][0]["id"]
            body = {"model": base, "prompt": PROMPT, "max_tokens": 2, "temperature": 0}
            async with session.post(f"{runtime.url}/v1/completions", json=body) as response:
                await response.read()


def cache_counters(fleet: Fleet) -> dict[str, dict[str, float]]:
    """Adapter cache hits and misses per live runtime, from its /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, float]] = {}
    for runtime in fleet.runtimes:
        if runtime.process is None or runtime.process.poll() is not None:
            continue
        with urllib.request.urlopen(f"{runtime.url}/metrics", timeout=10) as response:  # noqa: S310
            text = response.read().decode()
        values = {"hits": 0.0, "misses": 0.0}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "saigon_adapter_cache_hits_total":
                    values["hits"] = sample.value
                elif sample.name == "saigon_adapter_cache_misses_total":
                    values["misses"] = sample.value
        out[runtime.name] = values
    return out


def hit_rate(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> tuple[float, float, float]:
    """(hits, misses, hit rate) between two readings, over the runtimes present in both."""
    hits = sum(after[n]["hits"] - before[n]["hits"] for n in after if n in before)
    misses = sum(after[n]["misses"] - before[n]["misses"] for n in after if n in before)
    return hits, misses, hits / (hits + misses) if hits + misses else 0.0


def replicas_per_user(outcomes: Sequence[Outcome]) -> dict[int, set[str]]:
    seen: dict[int, set[str]] = {}
    for o in outcomes:
        if o.error is None and o.replica:
            seen.setdefault(o.user, set()).add(o.replica)
    return seen


# ---- the benchmark ------------------------------------------------------------------------------


@dataclass
class ModeResult:
    mode: str
    requests: int
    failed: int
    wall_s: float
    requests_per_s: float
    tokens_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    hits: float
    misses: float
    hit_rate: float
    max_replicas_per_user: int
    mean_replicas_per_user: float
    errors: list[str] = field(default_factory=list)


@dataclass
class Report:
    settings: dict[str, Any]
    modes: list[ModeResult]
    ratios: dict[str, float]
    # every round of each mode (the medians in `modes`), and the machine they ran on
    rounds: dict[str, list[ModeResult]] = field(default_factory=dict)
    hardware: str = ""


def run_mode(root: Path, base: Path, dirs: Sequence[Path], args: argparse.Namespace, affinity: bool) -> ModeResult:
    mode = "affinity" if affinity else "round-robin"
    rank = 4 if args.quick else 16
    with running_fleet(root, base, dirs, max_loras=args.max_loras, affinity=affinity, max_rank=rank) as fleet:
        asyncio.run(warm_up(fleet))
        before = cache_counters(fleet)
        order = sessions(args.users, args.requests_per_user, seed=args.seed)
        outcomes, wall = asyncio.run(
            run_sessions(fleet.url, order, requests_per_user=args.requests_per_user, active=args.active,
                         max_tokens=args.max_tokens, affinity=affinity)
        )  # fmt: skip
        hits, misses, rate = hit_rate(before, cache_counters(fleet))
    ok = [o for o in outcomes if o.error is None]
    latencies = [o.latency_s * 1000 for o in ok]
    spread = [len(s) for s in replicas_per_user(outcomes).values()]
    return ModeResult(
        mode=mode, requests=len(outcomes), failed=len(outcomes) - len(ok), wall_s=round(wall, 2),
        requests_per_s=round(len(ok) / wall, 2), tokens_per_s=round(sum(o.tokens for o in ok) / wall, 1),
        latency_p50_ms=round(percentile(latencies, 50), 1), latency_p99_ms=round(percentile(latencies, 99), 1),
        hits=hits, misses=misses, hit_rate=round(rate, 4), max_replicas_per_user=max(spread, default=0),
        mean_replicas_per_user=round(sum(spread) / len(spread), 2) if spread else 0.0,
        errors=sorted({o.error for o in outcomes if o.error})[:5],
    )  # fmt: skip


def median_result(results: Sequence[ModeResult]) -> ModeResult:
    """Each figure's median over rounds; counts of requests and failures are summed."""
    first = results[0]

    def med(name: str) -> float:
        return float(statistics.median(getattr(r, name) for r in results))

    return ModeResult(
        mode=first.mode, requests=sum(r.requests for r in results), failed=sum(r.failed for r in results),
        wall_s=med("wall_s"), requests_per_s=med("requests_per_s"), tokens_per_s=med("tokens_per_s"),
        latency_p50_ms=med("latency_p50_ms"), latency_p99_ms=med("latency_p99_ms"), hits=med("hits"),
        misses=med("misses"), hit_rate=med("hit_rate"),
        max_replicas_per_user=max(r.max_replicas_per_user for r in results),
        mean_replicas_per_user=med("mean_replicas_per_user"),
        errors=sorted({e for r in results for e in r.errors})[:5],
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", type=int, default=3)
    parser.add_argument("--users", type=int, default=300, help="users, each with an adapter of their own")
    parser.add_argument("--max-loras", type=int, default=16, help="device adapter slots per runtime")
    parser.add_argument("--active", type=int, default=48, help="users in a session at once (concurrent clients)")
    parser.add_argument("--requests-per-user", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=8, help="new tokens per request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="rounds of both modes, alternating which goes first; each figure is the median over rounds",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a tiny model (smoke run)")
    parser.add_argument("--plot", type=Path, help="write a PNG comparing the two modes")
    parser.add_argument("--json", type=Path, help="write the report as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the generated model, adapters and logs")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="saigon-routing-"))
    try:
        print(f"building a base model and {args.users} adapters, {args.runtimes} copies, in {root}")
        base = build_assets(root, args.users, quick=args.quick)
        dirs = install_copies(root, args.runtimes)
        runs: dict[bool, list[ModeResult]] = {True: [], False: []}
        for round_ in range(args.rounds):
            # Alternate the order, so a noisy spell on a shared machine favours neither mode.
            for with_affinity in (True, False) if round_ % 2 == 0 else (False, True):
                runs[with_affinity].append(run_mode(root, base, dirs, args, with_affinity))
        modes = [median_result(runs[True]), median_result(runs[False])]
        if args.keep:
            print(f"kept: {root} (runtime logs in {root / 'logs'})")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    affinity, rr = modes
    ratios = {
        "throughput affinity / round-robin": round(affinity.requests_per_s / rr.requests_per_s, 2)
        if rr.requests_per_s else 0.0,
        "p99 latency affinity / round-robin": round(affinity.latency_p99_ms / rr.latency_p99_ms, 2)
        if rr.latency_p99_ms else 0.0,
    }  # fmt: skip
    settings = {k: v for k, v in vars(args).items() if k not in ("plot", "json", "keep")}
    report = Report(
        settings=settings,
        modes=modes,
        ratios=ratios,
        hardware=describe("cpu"),
        rounds={runs[affinity][0].mode: runs[affinity] for affinity in (True, False)},
    )
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2, default=str))
    if args.plot:
        plot(report, args.plot)
        print(f"plot: {args.plot}")
    return 0 if all(m.failed == 0 for m in modes) else 1


def print_report(report: Report) -> None:
    s = report.settings
    print(f"{s['runtimes']} runtimes, {s['users']} users with an adapter each, max_loras={s['max_loras']}, "
          f"{s['active']} users active at once, {s['requests_per_user']} requests each, "
          f"{s['max_tokens']} new tokens")  # fmt: skip
    print(f"{'mode':<12} {'req/s':>8} {'tok/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'hit rate':>9} "
          f"{'replicas/user':>14} {'failed':>7}")  # fmt: skip
    for m in report.modes:
        print(f"{m.mode:<12} {m.requests_per_s:>8.2f} {m.tokens_per_s:>8.1f} {m.latency_p50_ms:>8.1f} "
              f"{m.latency_p99_ms:>8.1f} {m.hit_rate:>9.1%} {m.mean_replicas_per_user:>8.2f} (max "
              f"{m.max_replicas_per_user}) {m.failed:>7}")  # fmt: skip
        for error in m.errors:
            print(f"  error: {error}")
    for name, value in report.ratios.items():
        print(f"{name}: {value:.2f}x")


def plot(report: Report, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from saigon_runtime.bench.plot import caption, spread_bars

    names = [m.mode for m in report.modes]
    colors = ["#27a", "#888"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6))
    figures = (("requests / s", "requests_per_s"), ("p99 latency (ms)", "latency_p99_ms"),
               ("adapter cache hit rate", "hit_rate"))  # fmt: skip
    for ax, (title, figure) in zip(axes, figures, strict=True):
        spread_bars(ax, names, [[getattr(r, figure) for r in report.rounds[name]] for name in names], colors)
        ax.set_title(title)
    s = report.settings
    fig.suptitle(f"{s['runtimes']} runtimes, {s['users']} users, max_loras={s['max_loras']}, {s['active']} active, "
                 f"{s['rounds']} rounds")  # fmt: skip
    caption(fig, report.hardware)
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
