"""`saigon-runtime`: serve the HTTP API, or answer one request from the command line.

Flags override the SAIGON_* environment variables (names in saigon_runtime.config). Secrets
(SAIGON_ADMIN_TOKEN, SAIGON_INFERENCE_TOKENS) are read from the environment only, never from
flags, which other users of the machine can see in the process list.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from saigon_contract.cli import ArgumentParser
from saigon_contract.logs import add_logging_flags, log_format, setup_logging

from saigon_runtime.config import DEFAULT_PORT, RuntimeConfig
from saigon_runtime.engine.types import DEFAULT_TEMPERATURE

log = logging.getLogger("saigon_runtime")


def _model_flags(parser: argparse.ArgumentParser) -> None:
    # Both spellings: the original CLI used --adapters_dir; --adapters-dir is the usual style.
    parser.add_argument(
        "--base_model",
        "--base-model",
        dest="base_model_dir",
        type=Path,
        help="base model directory (SAIGON_BASE_MODEL)",
    )
    parser.add_argument(
        "--adapters_dir",
        "--adapters-dir",
        dest="adapters_dir",
        type=Path,
        help="adapters directory (SAIGON_ADAPTERS_DIR)",
    )
    parser.add_argument(
        "--mesh_dir", "--mesh-dir", dest="mesh_dir", type=Path, help="per-user mesh directory (SAIGON_MESH_DIR)"
    )
    parser.add_argument(
        "--log_dir", "--log-dir", dest="log_dir", type=Path, help="audit log directory (SAIGON_LOG_DIR)"
    )
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (SAIGON_DEVICE)")
    parser.add_argument("--dtype", help="auto, float32, bfloat16, float16 (SAIGON_DTYPE)")
    parser.add_argument(
        "--cache_size",
        "--cache-size",
        dest="max_loras",
        type=int,
        help="adapter slots on the device (SAIGON_CACHE_SIZE; default: sized from the memory budget)",
    )
    parser.add_argument(
        "--memory-utilization",
        dest="memory_utilization",
        type=float,
        help="share of device (or host) memory the runtime may use (SAIGON_MEMORY_UTILIZATION, default 0.9)",
    )
    parser.add_argument(
        "--cpu_cache_size",
        "--cpu-cache-size",
        dest="max_cpu_loras",
        type=int,
        help="adapters kept in host memory (SAIGON_CPU_CACHE_SIZE)",
    )
    parser.add_argument(
        "--max_rank", "--max-rank", dest="max_rank", type=int, help="largest LoRA rank (SAIGON_MAX_RANK)"
    )
    parser.add_argument(
        "--max_batch",
        "--max-batch",
        dest="max_batch_size",
        type=int,
        help="requests per engine step (SAIGON_MAX_BATCH)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="saigon-runtime", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('saigon-runtime')}")
    add_logging_flags(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host", help="address to listen on (SAIGON_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help=f"port (SAIGON_PORT, default {DEFAULT_PORT})")
    serve.add_argument(
        "--max_queue", "--max-queue", dest="max_queue", type=int, help="requests waiting before 429 (SAIGON_MAX_QUEUE)"
    )
    serve.add_argument(
        "--required_adapters",
        "--required-adapters",
        dest="required_adapters",
        type=_csv,
        help="adapters /readyz waits for, comma separated (SAIGON_REQUIRED_ADAPTERS)",
    )
    serve.add_argument(
        "--drain_timeout",
        "--drain-timeout",
        dest="drain_timeout_s",
        type=float,
        help="seconds in-flight requests get on SIGTERM (SAIGON_DRAIN_TIMEOUT)",
    )
    _model_flags(serve)

    infer = commands.add_parser("infer", help="answer one request and exit")
    infer.add_argument("--user_id", "--user-id", dest="user_id", help="whose adapter and mesh to use")
    infer.add_argument("--prompt", required=True, help="the user's input")
    infer.add_argument(
        "--temperature", type=float, default=DEFAULT_TEMPERATURE, help=f"0 is greedy (default {DEFAULT_TEMPERATURE})"
    )
    infer.add_argument(
        "--max_length",
        "--max-length",
        dest="max_length",
        type=int,
        default=128,
        help="new tokens at most (default 128)",
    )
    infer.add_argument("--system_prompt", "--system-prompt", dest="system_prompt")
    infer.add_argument("--adapter", help="serve with this adapter instead of the user's cascade")
    infer.add_argument(
        "--no_mesh", "--no-mesh", dest="use_mesh_context", action="store_false", help="leave the mesh context out"
    )
    infer.add_argument("--json", action="store_true", help="print the whole result as JSON")
    _model_flags(infer)

    legacy = commands.add_parser(
        "import-legacy",
        help="convert a pickle-era adapter (.bin/.pt state dict) into a safetensors adapter directory",
        description="Reads the weights with torch.load(weights_only=True): a pickle that wants to build "
        "anything but tensors is refused without running it. DEST must not exist yet.",
    )
    legacy.add_argument("source", type=Path, help="directory with adapter_config.json and adapter_model.bin/.pt")
    legacy.add_argument("dest", type=Path, help="new directory for the converted adapter")
    return parser


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


_COMMAND_ONLY = {"command", "log_level", "log_format", "source", "dest", "user_id", "prompt", "temperature",
                 "max_length", "system_prompt", "adapter", "use_mesh_context", "json"}  # fmt: skip


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in _COMMAND_ONLY and v is not None}


def config_from_args(args: argparse.Namespace) -> RuntimeConfig:
    return RuntimeConfig.from_env(**overrides_from_args(args))


def serve(config: RuntimeConfig) -> None:
    asyncio.run(_serve(config))


async def _serve(config: RuntimeConfig) -> None:
    """Listen until SIGTERM/SIGINT, then drain with the listener still open (/readyz answers 503,
    in-flight requests and streams finish, `drain_timeout_s` at most), then stop. A second signal
    cuts the drain short."""
    from aiohttp import web

    from saigon_runtime.server.app import RouteAccessLogger, create_app, drain

    app = create_app(config, freeze_after_load=True)
    runner = web.AppRunner(
        app,
        shutdown_timeout=config.drain_timeout_s,
        access_log_class=RouteAccessLogger,
        # A client that goes away cancels its handler, which cancels its engine rows (see generation.py).
        handler_cancellation=True,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port).start()
        log.info("listening on http://%s:%d", config.host, config.port)
        signalled = asyncio.Event()
        hurry = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            (hurry if signalled.is_set() else signalled).set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await signalled.wait()
        await drain(app, config.drain_timeout_s, hurry)
    finally:
        await runner.cleanup()


def infer(args: argparse.Namespace) -> dict[str, object]:
    from saigon_runtime.inference import SaigonInference

    service = SaigonInference(**overrides_from_args(args))
    try:
        return service.run_inference(
            args.user_id,
            args.prompt,
            use_mesh_context=args.use_mesh_context,
            temperature=args.temperature,
            max_length=args.max_length,
            system_prompt=args.system_prompt,
            adapter=args.adapter,
        )
    finally:
        service.close()


def import_legacy(source: Path, dest: Path) -> int:
    from saigon_runtime.adapters.legacy import import_legacy as convert
    from saigon_runtime.errors import AdapterRejected

    try:
        converted = convert(source, dest)
    except (AdapterRejected, FileExistsError, OSError) as exc:
        print(f"saigon-runtime: import-legacy refused {source}: {exc}", file=sys.stderr)
        return 2
    print(converted)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        setup_logging(args.log_level, log_format(args.log_format))
        if args.command == "import-legacy":
            return import_legacy(args.source, args.dest)
        config = config_from_args(args)
    except (TypeError, ValueError) as exc:
        print(f"saigon-runtime: bad configuration: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        serve(config)
        return 0
    try:
        result = infer(args)
    except Exception as exc:
        print(f"saigon-runtime: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str) if args.json else result["output"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
