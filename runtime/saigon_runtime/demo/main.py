"""`python -m saigon_runtime.demo.main build|serve|chat`: the embedded demo (what `make demo` runs).

build  builds the demo model and adapters once (a few minutes on a laptop CPU, no downloads) or
       reuses the cache, and prints where they are.
serve  does the same, then serves them on http://127.0.0.1:8001 and prints how to talk to it.
chat   an interactive prompt against a running demo server.
menu   the interactive demo (inference, hot-swap, adapter management, performance, chat).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from saigon_runtime.config import DEFAULT_PORT, RuntimeConfig
from saigon_runtime.demo.build import (
    CACHE_DIR_ENV,
    FULL,
    MINI,
    DemoAssets,
    build_demo_assets,
    default_cache_dir,
    entry_name,
)
from saigon_runtime.demo.catalog import DEMO_ADAPTERS, DEMO_DOMAINS, DEMO_PROMPTS

SCALES = {"full": FULL, "mini": MINI}
ADMIN_TOKEN_ENV = "SAIGON_ADMIN_TOKEN"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saigon_runtime.demo.main", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("build", "build or reuse the demo assets"), ("serve", "build or reuse, then serve")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--cache-dir", type=Path, help=f"cache root ({CACHE_DIR_ENV}, default ~/.cache/saigon)")
        sub.add_argument("--force", action="store_true", help="rebuild even if the cache has the assets")
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
        sub.add_argument("--scale", choices=sorted(SCALES), default="full", help=argparse.SUPPRESS)  # for tests
    commands.choices["build"].add_argument(
        "--examples", action="store_true", help="also print greedy answers of each adapter to the demo prompts"
    )
    serve = commands.choices["serve"]
    serve.add_argument("--host", help="address to listen on (SAIGON_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help=f"port (SAIGON_PORT, default {DEFAULT_PORT})")
    chat = commands.add_parser("chat", help="talk to a running demo server")
    chat.add_argument("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}", help="the server's base URL")
    chat.add_argument("--user", default="alice", help="user id (the cascade picks the adapter)")
    menu = commands.add_parser("menu", help="the interactive demo against a running demo server")
    menu.add_argument("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}", help="the server's base URL")
    menu.add_argument(
        "--admin-token",
        default=os.environ.get(ADMIN_TOKEN_ENV),
        help=f"admin bearer token for hot-swap and adapter management ({ADMIN_TOKEN_ENV}; serve prints it)",
    )
    menu.add_argument(
        "--adapters-dir",
        type=Path,
        default=default_cache_dir() / entry_name() / "adapters",
        help="the served adapters directory, where the hot-swap finds user_alice/v2 (serve prints it)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "chat":
        return chat(args.url, args.user)
    if args.command == "menu":
        from saigon_runtime.demo.menu import run_menu

        return run_menu(args.url, args.admin_token, args.adapters_dir)
    assets = build_demo_assets(args.cache_dir, force=args.force, scale=SCALES[args.scale], progress=not args.quiet)
    print(describe(assets), flush=True)
    if args.command == "build":
        if args.examples:
            print(examples(assets), flush=True)
        return 0
    return serve(assets, args.host, args.port)


def describe(assets: DemoAssets) -> str:
    how = "built" if assets.built else "reused from the cache"
    manifest = assets.manifest
    seconds = f" in {manifest.get('build_wall_s')} s" if assets.built else ""
    topics: dict[str, list[str]] = {}
    for spec in DEMO_ADAPTERS:
        topics.setdefault(spec.name, []).append(f"{spec.version} {spec.topic}{' (active)' if spec.active else ''}")
    adapter_lines = [f"      {name:<16} {', '.join(versions)}" for name, versions in topics.items()]
    return "\n".join(
        [
            f"Demo assets {how}{seconds}: {assets.root}",
            f"  base model  {assets.base_model_dir}",
            f"  adapters    {assets.adapters_dir}",
            *adapter_lines,
            f"  domains     {assets.domains_file}  {json.dumps(dict(DEMO_DOMAINS))}",
            f"  mesh        {assets.mesh_dir}",
            "  environment: " + " ".join(f"{k}={v}" for k, v in assets.env().items()),
        ]
    )


def examples(assets: DemoAssets) -> str:
    from saigon_runtime.demo.examples import greedy_answers

    names = sorted({spec.name for spec in DEMO_ADAPTERS})
    answers = greedy_answers(assets, DEMO_PROMPTS, names)
    lines = []
    for prompt in DEMO_PROMPTS:
        lines.append(f"\n{prompt}")
        lines += [f"  {label:<16} {by_prompt[prompt]}" for label, by_prompt in answers.items()]
    return "\n".join(lines)


def how_to_talk(host: str, port: int, assets: DemoAssets, admin_token: str | None) -> str:
    url = f"http://{host}:{port}"
    v2 = assets.adapters_dir / "user_alice" / "v2"
    lines = [
        f"\nServing the demo on {url} (the model loads in the background; `curl -s {url}/readyz` says when).",
        "Users: alice -> user_alice (cooking), bob -> user_bob (astronomy), carol -> domain_maritime (sailing),",
        "anyone else -> global (a pirate); model 'base' is the bare model. Try:",
        "",
        f"  curl -s {url}/api/saigon/infer -H 'content-type: application/json' \\",
        '       -d \'{"user_id": "alice", "input_text": "What should I do this weekend?", "temperature": 0}\'',
        f"  curl -s {url}/v1/completions -H 'content-type: application/json' \\",
        '       -d \'{"model": "user_bob", "prompt": "Tell me something interesting.", "max_tokens": 48, '
        '"temperature": 0}\'',
        "",
        "  .venv/bin/python -c 'from openai import OpenAI; c = OpenAI(base_url=\"" + url + '/v1", api_key="none"); '
        'print(c.chat.completions.create(model="global", messages=[{"role": "user", "content": "Who are you?"}], '
        "max_tokens=48, temperature=0).choices[0].message.content)'",
        "",
        f"  .venv/bin/python -m saigon_runtime.demo.main chat --url {url} --user carol    # interactive",
    ]
    menu = f"  .venv/bin/python -m saigon_runtime.demo.main menu --url {url} --adapters-dir {assets.adapters_dir}"
    lines += ["", "  the interactive demo (inference, hot-swap, adapters, performance, chat):"]
    lines.append(menu + (f" \\\n       --admin-token {admin_token}" if admin_token else ""))
    if admin_token:
        lines += [
            "",
            "  hot-swap alice to v2 (gardening), then ask her again:",
            f"  curl -s {url}/api/saigon/adapters/hot-swap -H 'content-type: application/json' \\",
            f'       -H "authorization: Bearer {admin_token}" \\',
            f'       -d \'{{"user_id": "alice", "new_adapter_path": "{v2}"}}\'',
        ]
    return "\n".join(lines)


def serve(assets: DemoAssets, host: str | None, port: int | None) -> int:
    from saigon_runtime import cli
    from saigon_runtime.demo.layout import point_active

    # Every run starts from the demo's initial versions, whatever an earlier hot-swap promoted.
    for spec in DEMO_ADAPTERS:
        if spec.active:
            point_active(assets.adapters_dir, spec.name, spec.version)
    # The hot-swap route is admin-only; a local demo gets a one-off token unless one is configured.
    admin_token = None if os.environ.get(ADMIN_TOKEN_ENV) else secrets.token_hex(16)  # hex: never starts with "-"
    config = RuntimeConfig.from_env(
        base_model_dir=assets.base_model_dir,
        adapters_dir=assets.adapters_dir,
        mesh_dir=assets.mesh_dir,
        host=host,
        port=port,
        admin_token=admin_token,
    )
    shown_token = admin_token or "$" + ADMIN_TOKEN_ENV
    print(how_to_talk(config.host, config.port, assets, shown_token), flush=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cli.serve(config)
    return 0


def chat(url: str, user: str) -> int:
    if not url.startswith(("http://", "https://")):
        print(f"chat: --url must be an http(s) URL, got {url!r}", file=sys.stderr)
        return 2
    print(f"Talking to {url} as {user!r}. '/user NAME' switches user, '/quit' leaves.")
    while True:
        try:
            text = input(f"{user}> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if text in {"/quit", "/exit"}:
            return 0
        if text.startswith("/user "):
            user = text.split(maxsplit=1)[1]
            continue
        if not text:
            continue
        body = {"user_id": user, "input_text": text, "temperature": 0, "max_length": 64}
        try:
            reply = _post_json(f"{url.rstrip('/')}/api/saigon/infer", body)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            print(f"  ! {_error_text(exc)}")
            continue
        parts = (reply.get("adapter_used") or "base", reply.get("adapter_active"))
        served = " ".join(str(part) for part in parts if part)
        print(f"  [{served}] {str(reply.get('output', '')).strip()}")


def _post_json(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked in chat())
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
        data = json.loads(response.read())
    if not isinstance(data, dict):
        raise ValueError("the server answered with something other than a JSON object")
    return data


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        try:
            return f"HTTP {exc.code}: {exc.read().decode(errors='replace')}"
        except OSError:
            return f"HTTP {exc.code}"
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
