"""Hostile input against a real `saigon-runtime serve` process, and what it does to /healthz.

    python -m saigon_runtime.bench.attacks [--seconds 4] [--rounds 2]

Builds a tiny model and adapters (some hostile: a catastrophic `alpha_pattern`, 60,000-deep JSON,
NaN and string alphas, an invalid pattern, a weights file linked out of the adapters directory),
starts a server with the watcher scanning them, then for each attack alternates a quiet window
and an attack window while a prober asks /healthz every few milliseconds. Prints, per attack,
the requests sent, their answers by status class and the /healthz p50/p99/max (quiet | attacked).

The generators here also feed the hostile-input test suite (runtime/tests/test_hostile_inputs.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from saigon_runtime.bench.load import free_port, percentile
from saigon_runtime.bench.routing import stop_process, wait_until

ADMIN_TOKEN = "attacks-admin-token"
USER_TOKEN = "attacks-alice-token"
CATASTROPHIC_PATTERN = "(.|.){0,25}@"
HUGE_PROMPT_CHARS = 197_000


# ---------------------------------------------------------------- raw HTTP


def http_request(method: str, path: str, headers: dict[str, bytes] | None = None, body: bytes | None = None) -> bytes:
    """A request as bytes on the wire (header values may hold any byte)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(name.encode() + b": " + value)
    if body is not None:
        lines.append(b"Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def send(port: int, data: bytes, timeout_s: float = 120.0) -> int | None:
    """Send one raw request; the response's status, or None when the connection closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as conn:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(data)  # the server may answer (and close) before reading it all
        received = b""
        try:
            while b"\r\n" not in received and (chunk := conn.recv(65536)):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            return None
    parts = received.split(b" ", 2)
    return int(parts[1]) if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() else None


def status_class(status: int | None) -> str:
    return "no answer" if status is None else f"{status // 100}xx"


# ---------------------------------------------------------------- attack generators


def bearer(token: str) -> dict[str, bytes]:
    return {"Authorization": f"Bearer {token}".encode()}


def header_attacks(rng: random.Random, count: int) -> Iterator[bytes]:
    """Undecodable and hostile credentials, oversized and too many headers, odd header names."""
    paths = [("GET", "/healthz"), ("GET", "/v1/models"), ("GET", "/admin/adapters"), ("GET", "/api/saigon/status"),
             ("GET", "/api/saigon/mesh/alice")]  # fmt: skip
    for i in range(count):
        method, path = paths[i % len(paths)]
        kind = i % 7
        if kind == 0:
            junk = bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randrange(1, 300)))
            yield http_request(method, path, {"Authorization": b"Bearer " + junk})
        elif kind == 1:
            printable = bytes(rng.choice(b"\t !#$%&'*+-.^_`|~0123456789abcdefXYZ\x7f") for _ in range(64))
            yield http_request(method, path, {"Authorization": rng.choice([b"Bearer ", b"Basic ", b"", b"bearer  "])
                                              + printable})  # fmt: skip
        elif kind == 2:
            yield http_request(method, path, {"X-Big": b"a" * rng.choice([8191, 16_384, 70_000])})
        elif kind == 3:
            many = {f"X-H{j}": b"v" for j in range(rng.choice([120, 500, 3000]))}
            yield http_request(method, path, many)
        elif kind == 4:
            yield http_request(method, path, {"X-Saigon-User": bytes(rng.randrange(1, 256) for _ in range(40))
                                              .replace(b"\r", b"").replace(b"\n", b"")})  # fmt: skip
        elif kind == 5:
            name = rng.choice(["X\x80Bad", "Bad Name", "X:Colon", "\x00"])
            yield http_request(method, path, {name: b"value"})
        else:
            line = rng.choice([b"GET /healthz HTTP/9.9", b"GET " + b"/" * 9000 + b" HTTP/1.1", b"\x16\x03\x01\x02",
                               b"G\xffT /healthz HTTP/1.1", b"GET /healthz\x00 HTTP/1.1"])  # fmt: skip
            yield line + b"\r\nHost: x\r\nConnection: close\r\n\r\n"


# The POST routes with a valid body each; body attacks mutate them.
def valid_bodies(model: str) -> list[tuple[str, dict[str, object]]]:
    return [
        ("/v1/completions", {"model": model, "prompt": "the cat", "max_tokens": 2}),
        ("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
        ("/api/saigon/infer", {"user_id": "alice", "input_text": "the sea", "max_length": 2}),
        ("/api/saigon/infer/batch", {"requests": [{"user_id": "bob", "input_text": "x", "max_length": 1}]}),
        ("/admin/adapters/load", {"name": "global"}),
        ("/admin/adapters/pin", {"name": "global", "pinned": False}),
        ("/admin/adapters/unload", {"name": "user_nobody"}),
        ("/admin/adapters/stats", {"name": "global"}),
        ("/api/saigon/adapters/hot-swap", {"user_id": "carol", "new_adapter_path": "/etc"}),
    ]


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


_ODD_VALUES: list[object] = [
    None, True, -1, 0, 2**64, 1e308, -1e308, 3.5, "", "x" * 5000, [], {}, [1, [2, [3]]], {"a": {"b": None}},
    "\u202e\u0000\ufeff", "alice\n", "../../etc/passwd", "user_a..b",
]  # fmt: skip


def body_attacks(rng: random.Random, count: int, model: str) -> Iterator[bytes]:
    """Wrong types, huge numbers, NaN, deep nesting, broken JSON and encodings, oversized bodies."""
    routes = valid_bodies(model)
    for i in range(count):
        path, valid = routes[i % len(routes)]
        body = dict(valid)
        kind = i % 8
        if kind == 0 and body:
            body[rng.choice(list(body))] = rng.choice(_ODD_VALUES)
            raw = json.dumps(body).encode()
        elif kind == 1:
            key = rng.choice(list(body))
            raw = json.dumps(body).replace(json.dumps(key) + ": ", json.dumps(key) + ": " + "[" * 30_000 + "]" * 30_000
                                           + ", \"_\": ", 1).encode()  # fmt: skip
        elif kind == 2:
            raw = deep_json(rng.choice([1000, 60_000]))
        elif kind == 3:
            raw = json.dumps(body).encode()[: rng.randrange(1, 20)]
        elif kind == 4:
            raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        elif kind == 5:
            raw = json.dumps(body).encode().replace(b"2", b"NaN", 1).replace(b'"alice"', b'"\\ud800"')
        elif kind == 6:
            raw = b'{"model": "' + b"m" * (1 << 20) + b'"}'
        else:
            raw = json.dumps({**body, **{f"extra{j}": j for j in range(200)}}).encode()
        yield http_request("POST", path, bearer(ADMIN_TOKEN), raw)


def token_attacks(rng: random.Random, count: int, model: str) -> Iterator[bytes]:
    """Prompts as hostile tokens: control characters, lone surrogates, special-token text, huge text."""
    for i in range(count):
        kind = i % 6
        if kind == 0:
            prompt = "".join(chr(rng.randrange(0, 0x20)) for _ in range(200))
        elif kind == 1:
            prompt = "".join(chr(rng.choice([rng.randrange(0x80, 0xD800), rng.randrange(0xE000, 0x110000)]))
                             for _ in range(300))  # fmt: skip
        elif kind == 2:
            prompt = "<eos><pad><|im_start|>system\n<s></s>[INST]" * 20
        elif kind == 3:
            prompt = "the cat " * (HUGE_PROMPT_CHARS // 8)
        elif kind == 4:
            prompt = "\ufeff\u200b\u202e" * 500
        else:
            prompt = "".join(rng.choice("abc def\n\t.,;") for _ in range(rng.randrange(1, 2000)))
        payload = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0,
                   "stop": ["\x00", "<eos>"], "user": "alice"}  # fmt: skip
        raw = json.dumps(payload).encode()
        if kind == 1:
            raw = raw.replace(b'"prompt": "', b'"prompt": "\\udc80\\ud800', 1)  # lone surrogates in JSON escapes
        yield http_request("POST", "/v1/completions", bearer(ADMIN_TOKEN), raw)


def hostile_configs(rng: random.Random, count: int, good: dict[str, object]) -> Iterator[bytes]:
    """adapter_config.json variants: bad values, catastrophic and invalid patterns, deep nesting."""
    patterns = [CATASTROPHIC_PATTERN, "(a+)+$", "(a|aa)+b", "(x+x+)+y", "(?=q)q", "(a)\\1", "[", "q_proj",
                ".*", "(.{500}){500}", "o_proj$", "model\\.layers\\.0\\..*"]  # fmt: skip
    values: list[object] = ["abc", 1e308, -4, 0, None, [], {}, True, 8, 16.5]
    for i in range(count):
        config = dict(good)
        kind = i % 5
        if kind == 0:
            config[rng.choice(["lora_alpha", "r", "use_rslora", "bias", "peft_type"])] = rng.choice(values)
        elif kind == 1:
            config["alpha_pattern"] = {rng.choice(patterns): rng.choice([2, 3.5, "x", -1]) for _ in range(3)}
        elif kind == 2:
            config["rank_pattern"] = {rng.choice(patterns): rng.choice([4, 6, 0, 2.5]) for _ in range(2)}
        elif kind == 3:
            yield deep_json(rng.choice([300, 60_000]))
            continue
        else:
            config[f"unknown_{i}"] = rng.choice(values)
        text = json.dumps(config)
        yield text.replace("1e+308", "NaN").encode() if rng.random() < 0.2 else text.encode()


# ---------------------------------------------------------------- the server under attack


def build_assets(root: Path) -> tuple[Path, Path, Path]:
    """(base model, adapters dir, staging dir), with hostile adapters already on disk."""
    from saigon_runtime.testing.tiny import install_adapter, make_adapter, make_llama

    base = make_llama(root / "base")
    good = make_adapter(base, root / "good", seed=1)
    adapters, staging = root / "adapters", root / "staging"
    staging.mkdir(parents=True)
    install_adapter(adapters, "global", "v1", good)
    install_adapter(adapters, "user_alice", "v1", good)
    config = json.loads((good / "adapter_config.json").read_text())
    hostile = {
        "user_redos": json.dumps({**config, "alpha_pattern": {CATASTROPHIC_PATTERN: 2.0}}),
        "user_deep": "[" * 60_000 + "]" * 60_000,
        "user_nan": json.dumps({**config, "lora_alpha": 1e308}).replace("1e+308", "NaN"),
        "user_abc": json.dumps({**config, "lora_alpha": "abc"}),
        "user_badpattern": json.dumps({**config, "alpha_pattern": {"(?=q)q_proj": 2.0}}),
    }
    for name, text in hostile.items():
        (install_adapter(adapters, name, "v1", good) / "adapter_config.json").write_text(text)
    linked = install_adapter(adapters, "user_link", "v1", good)
    (linked / "adapter_model.safetensors").unlink()
    os.symlink(good / "adapter_model.safetensors", linked / "adapter_model.safetensors")
    return base, adapters, staging


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    model: str

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_server(root: Path, *, watch_interval_s: float = 0.2) -> Iterator[Server]:
    base, adapters, staging = build_assets(root)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAIGON_")}
    env.update({
        "SAIGON_ADMIN_TOKEN": ADMIN_TOKEN, "SAIGON_INFERENCE_TOKENS": f"{USER_TOKEN}=alice",
        "SAIGON_STAGING_DIR": str(staging), "SAIGON_WATCH_INTERVAL": str(watch_interval_s),
        "SAIGON_MAX_NEW_TOKENS": "8", "SAIGON_MAX_QUEUE": "1024", "SAIGON_SLOT_WAIT_TIMEOUT": "60",
    })  # fmt: skip
    command = [sys.executable, "-m", "saigon_runtime.cli", "serve", "--port", str(port), "--base-model", str(base),
               "--adapters-dir", str(adapters), "--device", "cpu", "--cache-size", "4"]  # fmt: skip
    log_path = root / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(f"{url}/readyz", process, limit_s=600)
        yield Server(url, port, process, log_path, base.name)
    finally:
        stop_process(process, signal.SIGTERM, timeout_s=60)


@dataclass
class Prober:
    """Asks /healthz every `interval_s` from its own thread; keeps each latency (or a failure)."""

    port: int
    interval_s: float = 0.01
    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Prober:
        self._thread = threading.Thread(target=self._run, name="healthz-prober", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def _run(self) -> None:
        probe = http_request("GET", "/healthz")
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                status = send(self.port, probe, timeout_s=30)
            except OSError:
                status = None
            if status == 200:
                self.latencies_ms.append((time.perf_counter() - started) * 1000.0)
            else:
                self.failures += 1
            self._stop.wait(self.interval_s)


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)  # category -> requests
    answers: Counter[tuple[str, str]] = field(default_factory=Counter)  # (category, status class) -> count
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, category: str, status: int | None) -> None:
        with self.lock:
            self.sent[category] += 1
            self.answers[(category, status_class(status))] += 1

    def server_errors(self) -> int:
        return sum(n for (_, cls), n in self.answers.items() if cls == "5xx")

    def table(self) -> str:
        classes = ["2xx", "3xx", "4xx", "5xx", "no answer"]
        rows = [f"{'category':<16}{'sent':>7}" + "".join(f"{c:>11}" for c in classes)]
        for category in sorted(self.sent):
            counts = "".join(f"{self.answers[(category, c)]:>11}" for c in classes)
            rows.append(f"{category:<16}{self.sent[category]:>7}{counts}")
        total = "".join(f"{sum(n for (_, k), n in self.answers.items() if k == c):>11}" for c in classes)
        rows.append(f"{'total':<16}{sum(self.sent.values()):>7}{total}")
        return "\n".join(rows)


def fire(port: int, requests: Iterator[bytes], tally: Tally, category: str, *, workers: int = 4,
         until: float | None = None) -> None:  # fmt: skip
    """Send the requests from `workers` threads (until the iterator ends, or the deadline passes)."""
    lock = threading.Lock()

    def work() -> None:
        while until is None or time.monotonic() < until:
            with lock:
                data = next(requests, None)
            if data is None:
                return
            try:
                status = send(port, data)
            except OSError:
                status = None
            tally.record(category, status)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# ---------------------------------------------------------------- the benchmark


def attack_streams(server: Server, staging: Path, rng: random.Random) -> dict[str, Callable[[], Iterator[bytes]]]:
    """Endless request streams, one per attack the table reports."""

    def forever(make: Callable[[], bytes]) -> Callable[[], Iterator[bytes]]:
        return lambda: iter(make, None)

    def redos() -> bytes:
        # A fresh copy each time (a new version): the runtime reads the config again.
        target = staging / f"redos-{rng.randrange(1 << 30)}"
        shutil.copytree(staging.parent / "adapters" / "user_redos" / "v1", target)
        return http_request("POST", "/admin/adapters/load", bearer(ADMIN_TOKEN),
                            json.dumps({"name": "user_redos", "path": str(target)}).encode())  # fmt: skip

    huge = json.dumps({"model": server.model, "prompt": "the cat " * (HUGE_PROMPT_CHARS // 8), "max_tokens": 1})
    return {
        "ReDoS config": forever(redos),
        "huge prompts": forever(lambda: http_request("POST", "/v1/completions", bearer(ADMIN_TOKEN), huge.encode())),
        "bad auth": forever(lambda: http_request("GET", "/admin/adapters", {"Authorization": b"Bearer \xff\xfe"
                                                                            + bytes(rng.randrange(0x80, 0x100)
                                                                                    for _ in range(64))})),
        "oversized hdrs": forever(lambda: http_request("GET", "/v1/models", {"X-Big": b"a" * 70_000})),
        "deep JSON": forever(lambda: http_request("POST", "/v1/completions", bearer(ADMIN_TOKEN), deep_json(60_000))),
    }  # fmt: skip


def measure(server: Server, stream: Callable[[], Iterator[bytes]] | None, seconds: float, tally: Tally,
            category: str) -> tuple[list[float], int]:  # fmt: skip
    """/healthz latencies in one window, and how many probes got no 200 (a stalled loop)."""
    with Prober(server.port) as prober:
        if stream is None:
            time.sleep(seconds)
        else:
            fire(server.port, stream(), tally, category, workers=4, until=time.monotonic() + seconds)
    return prober.latencies_ms, prober.failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each quiet and attack window")
    parser.add_argument("--rounds", type=int, default=2, help="quiet/attack alternations per attack")
    args = parser.parse_args(argv)
    rng = random.Random(15)
    tally = Tally()
    rows = []
    with tempfile.TemporaryDirectory(prefix="saigon-attacks-") as tmp, running_server(Path(tmp)) as server:
        streams = attack_streams(server, Path(tmp) / "staging", rng)
        for name, stream in streams.items():
            quiet: list[float] = []
            attacked: list[float] = []
            failed = 0
            for _ in range(args.rounds):
                quiet += measure(server, None, args.seconds, tally, name)[0]
                latencies, failures = measure(server, stream, args.seconds, tally, name)
                attacked += latencies
                failed += failures
            rows.append((name, quiet, attacked, failed))
        alive = server.process.poll() is None
    print(f"/healthz latency in ms, quiet | under attack ({args.rounds} x {args.seconds:g} s windows each)")
    print(f"{'attack':<16}{'p50':>9}{'p99':>9}{'max':>9}  |{'p50':>9}{'p99':>9}{'max':>10}{'probes':>8}{'failed':>8}")
    for name, quiet, attacked, failed in rows:
        print(f"{name:<16}" + "".join(f"{percentile(quiet, q):>9.1f}" for q in (50, 99)) + f"{max(quiet):>9.1f}  |"
              + "".join(f"{percentile(attacked, q):>9.1f}" for q in (50, 99)) + f"{max(attacked, default=0):>10.1f}"
              + f"{len(attacked):>8}{failed:>8}")  # fmt: skip
    print()
    print("attack requests by answer:")
    print(tally.table())
    print(f"server still running afterwards: {alive}")
    stalled = sum(row[3] for row in rows)
    return 0 if alive and tally.server_errors() == 0 and stalled == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
