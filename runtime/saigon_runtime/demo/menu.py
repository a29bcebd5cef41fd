"""`python -m saigon_runtime.demo.main menu`: the interactive demo against a running demo server.

1 basic inference, 2 hot-swap (alice v1 -> v2 while serving), 3 adapter management, 4 performance
test, 5 interactive chat, 0/q quit. Plain `input()` lines, so it works in a terminal and with
piped input alike: end of input leaves cleanly, and a server error is printed, never raised.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saigon_runtime.demo.catalog import DEMO_PROMPTS

DEMO_USERS = ("alice", "bob", "carol", "zed")  # own adapter, own adapter, domain, global
SWAP_USER = "alice"
SWAP_ADAPTER = "user_alice"
SWAP_TARGET = "v2"
MAX_TOKENS = 32
ROUNDS = 3  # repeated warm requests the perf test averages

MENU = """
Saigon demo
  1  basic inference
  2  hot-swap alice's adapter v1 -> v2 while serving
  3  adapter management (list, load, unload, pin, cache state)
  4  performance test (cache miss vs hit, mixed batch vs one at a time)
  5  interactive chat
  0  quit (or q)"""
SHORT_MENU = "\nmenu: 1 inference | 2 hot-swap | 3 adapters | 4 performance | 5 chat | 0/q quit"


class EndOfInput(Exception):
    """Stdin is closed: the menu leaves as if the user had chosen quit."""


class ApiCallError(Exception):
    """A request that failed; the message is what the user sees."""


@dataclass
class Client:
    """A small JSON client for the runtime's HTTP API."""

    url: str
    admin_token: str | None = None
    timeout_s: float = 120.0

    def get(self, path: str, *, admin: bool = False) -> dict[str, Any]:
        return self._send("GET", path, None, admin)

    def post(self, path: str, body: dict[str, Any], *, admin: bool = False) -> dict[str, Any]:
        return self._send("POST", path, body, admin)

    def _send(self, method: str, path: str, body: dict[str, Any] | None, admin: bool) -> dict[str, Any]:
        if admin and not self.admin_token:
            raise ApiCallError("this needs the admin token: pass --admin-token (serve prints it)")
        headers = {"content-type": "application/json"}
        if admin:
            headers["authorization"] = f"Bearer {self.admin_token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked in run_menu)
            self.url.rstrip("/") + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ApiCallError(_http_error_text(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiCallError(f"cannot reach {self.url}: {reason}") from None
        except ValueError:
            raise ApiCallError(f"{path} answered with something other than JSON") from None
        if not isinstance(answer, dict):
            raise ApiCallError(f"{path} answered with something other than a JSON object")
        return answer

    def infer(self, user: str, text: str, max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
        body = {"user_id": user, "input_text": text, "temperature": 0, "max_length": max_tokens}
        return self.post("/api/saigon/infer", body)


def _http_error_text(exc: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(exc.read()).get("error", {})
        message = detail.get("message") or str(detail)
        kind = detail.get("type")
    except (OSError, ValueError, AttributeError):
        message, kind = exc.reason, None
    return f"HTTP {exc.code}{f' {kind}' if kind else ''}: {message}"


class Console:
    """Reads answers with input(); echoes them when stdin is not a terminal, so a piped
    transcript reads like a session."""

    def __init__(self) -> None:
        self.echo = not sys.stdin.isatty()

    def ask(self, prompt: str, default: str = "") -> str:
        shown = f"{prompt} [{default}]: " if default else f"{prompt}: "
        try:
            line = input(shown)
        except EOFError:
            print()
            raise EndOfInput from None
        if self.echo:
            print(line)
        return line.strip() or default


# ---- 1 basic inference ------------------------------------------------------------------------
def one_line(text: object) -> str:
    return " ".join(str(text).split())


def served_by(reply: dict[str, Any]) -> str:
    adapter = reply.get("adapter_used") or "base model"
    version = reply.get("adapter_active")
    return f"{adapter} {version}" if version else str(adapter)


def describe_reply(reply: dict[str, Any]) -> str:
    lines = [
        f"  output:   {one_line(reply.get('output', ''))}",
        f"  adapter:  {served_by(reply)} (scope {reply.get('adapter_scope')})",
        f"  mesh context used: {'yes' if reply.get('mesh_context_used') else 'no'}",
        f"  latency:  {reply.get('latency_ms', 0):.0f} ms, {reply.get('completion_tokens')} tokens",
    ]
    if reply.get("fallback_reason"):
        lines.append(f"  fallback: {reply['fallback_reason']}")
    return "\n".join(lines)


def basic_inference(client: Client, console: Console, _: Path) -> None:
    print("Users: alice (own adapter), bob (own adapter), carol (her domain's), anyone else (global).")
    user = console.ask("user", "alice")
    prompt = console.ask("prompt", DEMO_PROMPTS[0])
    print(describe_reply(client.infer(user, prompt)))


# ---- 2 hot-swap -------------------------------------------------------------------------------
def hot_swap(client: Client, console: Console, adapters_dir: Path) -> None:
    source = adapters_dir / SWAP_ADAPTER / SWAP_TARGET
    if not source.is_dir():
        raise ApiCallError(f"no adapter directory at {source}: pass --adapters-dir (serve prints it)")
    before = client.infer(SWAP_USER, DEMO_PROMPTS[0])
    print(f"Before: {SWAP_USER} is served by {served_by(before)}: {one_line(before['output'])}")
    print(f"Swapping {SWAP_ADAPTER} to {source} while 6 requests for {SWAP_USER} are running...")
    during, swap = _swap_under_load(client, source, requests=6)
    print(f"Swapped: {swap['adapter']} {swap['previous_version']} -> {swap['version']}")
    for i, (reply, finished_after) in enumerate(during, 1):
        when = "finished after the swap" if finished_after else "finished before the swap"
        print(f"  request {i} (in flight, {when}): {served_by(reply)}: {one_line(reply['output'])}")
    after = [client.infer(SWAP_USER, prompt) for prompt in DEMO_PROMPTS[:2]]
    for reply in after:
        print(f"  request after the swap: {served_by(reply)}: {one_line(reply['output'])}")
    versions = {r.get("adapter_active") for r in [reply for reply, _ in during] + after}
    mixed = versions - {swap["previous_version"], swap["version"]}
    new_only = all(r.get("adapter_active") == swap["version"] for r in after)
    seen = ", ".join(sorted(map(str, versions)))
    verdict = "no other" if not mixed else f"UNEXPECTED {sorted(map(str, mixed))}"
    print(f"Every answer names exactly one version of {SWAP_ADAPTER}: seen {seen}, {verdict}.")
    print(f"Answers after the swap all come from {swap['version']}: {'yes' if new_only else 'NO'}")
    previous = swap["previous_version"]
    if previous and previous != swap["version"] and console.ask(f"swap back to {previous}? (y/n)", "n") == "y":
        back = client.post("/admin/adapters/load", {"name": SWAP_ADAPTER, "version": previous}, admin=True)
        print(f"Swapped back: {back['name']} is on {back['version']} again.")


def _swap_under_load(
    client: Client, source: Path, requests: int
) -> tuple[list[tuple[dict[str, Any], bool]], dict[str, Any]]:
    """Requests for the swapped user run in threads while the hot-swap call happens; each answer
    comes back with whether it finished after the swap call returned."""

    def timed_infer(prompt: str) -> tuple[dict[str, Any], float]:
        reply = client.infer(SWAP_USER, prompt)
        return reply, time.monotonic()

    with ThreadPoolExecutor(max_workers=requests) as pool:
        prompts = [DEMO_PROMPTS[i % len(DEMO_PROMPTS)] for i in range(requests)]
        futures: list[Future[tuple[dict[str, Any], float]]] = [pool.submit(timed_infer, p) for p in prompts]
        time.sleep(0.02)  # let them reach the server first
        body = {"user_id": SWAP_USER, "new_adapter_path": str(source)}
        swap = client.post("/api/saigon/adapters/hot-swap", body, admin=True)
        swapped_at = time.monotonic()
        return [(reply, done > swapped_at) for reply, done in (f.result() for f in futures)], swap


# ---- 3 adapter management ---------------------------------------------------------------------
ADAPTER_HELP = "commands: list | status | load NAME [VERSION] | unload NAME | pin NAME | unpin NAME | back"


def adapter_table(client: Client) -> str:
    adapters = client.get("/admin/adapters", admin=True)["adapters"]
    lines = [f"  {'name':<18} {'version':<14} {'tier':<7} pinned"]
    for a in adapters:
        pinned = "yes" if a["pinned"] else "no"
        lines.append(f"  {a['name']:<18} {a['version'] or '-':<14} {a['tier']:<7} {pinned}")
    return "\n".join(lines)


def cache_state(client: Client) -> str:
    status = client.get("/api/saigon/status")
    cache = status.get("cache")
    if not status.get("engine_initialized") or not cache:
        return "  engine not ready yet"
    resident = ", ".join(f"{r['name']} {r['version']} ({r['tier']})" for r in status["resident_adapters"])
    return "\n".join(
        [
            f"  device {status['device']}: {cache['device']}/{cache['max_device']} device slots, "
            f"{cache['host']}/{cache['max_host']} host copies",
            f"  hits {cache['hits']}, misses {cache['misses']}, loads {cache['loads']}, evictions {cache['evictions']}",
            f"  resident: {resident or 'none'}",
        ]
    )


def adapter_management(client: Client, console: Console, _: Path) -> None:
    print(adapter_table(client))
    print(cache_state(client))
    print(ADAPTER_HELP)
    while True:
        words = console.ask("adapters").split()
        if not words or words[0] in {"back", "/back", "b"}:
            return
        try:
            print(adapter_command(client, words))
        except ApiCallError as exc:
            print(f"  ! {exc}")


def adapter_command(client: Client, words: list[str]) -> str:
    command, args = words[0], words[1:]
    if command == "list":
        return adapter_table(client)
    if command == "status":
        return cache_state(client)
    if command == "load" and len(args) in (1, 2):
        body: dict[str, Any] = {"name": args[0]} | ({"version": args[1]} if len(args) == 2 else {})
        loaded = client.post("/admin/adapters/load", body, admin=True)
        return f"  loaded {loaded['name']} {loaded['version']}"
    if command == "unload" and len(args) == 1:
        client.post("/admin/adapters/unload", {"name": args[0]}, admin=True)
        return f"  unloaded {args[0]} (not served until loaded again)"
    if command in {"pin", "unpin"} and len(args) == 1:
        pinned = client.post("/admin/adapters/pin", {"name": args[0], "pinned": command == "pin"}, admin=True)
        return f"  {pinned['name']} {'pinned' if pinned['pinned'] else 'unpinned'}"
    return f"  ? {ADAPTER_HELP}"


# ---- 4 performance test -----------------------------------------------------------------------
def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return (time.perf_counter() - started) * 1000.0, result


def performance_test(client: Client, console: Console, _: Path) -> None:
    cache_miss_vs_hit(client, user="bob", adapter="user_bob")
    mixed_batch(client)


def cache_miss_vs_hit(client: Client, user: str, adapter: str) -> None:
    prompt = DEMO_PROMPTS[1]
    print(f"Cache miss vs hit ({adapter}, {MAX_TOKENS} tokens):")
    # Unloading drops every cached copy; loading back reads it from disk: what a cold adapter costs.
    client.post("/admin/adapters/unload", {"name": adapter}, admin=True)
    load_ms, _ = timed(lambda: client.post("/admin/adapters/load", {"name": adapter}, admin=True))
    first_ms, _ = timed(lambda: client.infer(user, prompt))
    cold_ms = load_ms + first_ms
    warm = [timed(lambda: client.infer(user, prompt))[0] for _ in range(ROUNDS)]
    warm_ms = statistics.mean(warm)
    print(f"  cold: load from disk {load_ms:.0f} ms + first request {first_ms:.0f} ms = {cold_ms:.0f} ms")
    print(f"  warm: {warm_ms:.0f} ms per request (mean of {ROUNDS})")
    print(f"  ratio cold/warm: {cold_ms / warm_ms:.2f}x")


def mixed_batch(client: Client) -> None:
    prompt = DEMO_PROMPTS[0]
    requests = [{"user_id": u, "input_text": prompt, "temperature": 0, "max_length": MAX_TOKENS} for u in DEMO_USERS]
    print(f"Mixed batch: {len(requests)} users ({', '.join(DEMO_USERS)}), {MAX_TOKENS} tokens each:")
    one_by_one_ms, _ = timed(lambda: [client.infer(u, prompt) for u in DEMO_USERS])
    batch_ms, batch = timed(lambda: client.post("/api/saigon/infer/batch", {"requests": requests, "parallel": True}))
    adapters = ", ".join(served_by(r) for r in batch["results"])
    print(f"  one at a time: {one_by_one_ms:.0f} ms")
    print(f"  batched (parallel=true): {batch_ms:.0f} ms  [{adapters}]")
    print(f"  ratio one-at-a-time/batched: {one_by_one_ms / batch_ms:.2f}x")


# ---- 5 interactive chat -----------------------------------------------------------------------
def chat(client: Client, console: Console, _: Path) -> None:
    user = console.ask("user", "alice")
    print(f"Chatting as {user!r}; an empty line or /back returns to the menu.")
    while True:
        text = console.ask(user)
        if text in {"", "/back"}:
            return
        try:
            reply = client.infer(user, text, max_tokens=64)
        except ApiCallError as exc:
            print(f"  ! {exc}")
            continue
        print(f"  [{served_by(reply)}] {one_line(reply.get('output', ''))}")


# ---- the menu ---------------------------------------------------------------------------------
Action = Callable[[Client, Console, Path], None]
ACTIONS: dict[str, tuple[str, Action]] = {
    "1": ("basic inference", basic_inference),
    "2": ("hot-swap", hot_swap),
    "3": ("adapter management", adapter_management),
    "4": ("performance test", performance_test),
    "5": ("interactive chat", chat),
}


def choices(console: Console) -> Iterator[str]:
    print(MENU)
    while True:
        yield console.ask("choice").lower()
        print(SHORT_MENU)


def run_menu(url: str, admin_token: str | None, adapters_dir: Path) -> int:
    if not url.startswith(("http://", "https://")):
        print(f"menu: --url must be an http(s) URL, got {url!r}", file=sys.stderr)
        return 2
    client = Client(url, admin_token)
    console = Console()
    print(f"Talking to {url}{'' if admin_token else ' (no admin token: hot-swap and adapter management refuse)'}.")
    try:
        for choice in choices(console):
            if choice in {"0", "q", "quit", "exit"}:
                return 0
            if choice not in ACTIONS:
                print(f"  ? choose 1-5, or 0/q to quit (got {choice!r})")
                continue
            title, action = ACTIONS[choice]
            print(f"\n== {title} ==")
            try:
                action(client, console, adapters_dir)
            except ApiCallError as exc:
                print(f"  ! {exc}")
    except EndOfInput:
        return 0
    except KeyboardInterrupt:
        print()
        return 130
    return 0
