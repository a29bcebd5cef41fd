"""`saigon-agent run` (the sidecar), `saigon-agent fetch-model` (the base model's init container) and
`saigon-agent digest PATH` (the sha256 a SaigonAdapter, or with --model a SaigonModel, needs)."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from pathlib import Path

from saigon_contract.cli import ArgumentParser
from saigon_contract.logs import add_logging_flags, log_format, setup_logging

from saigon_agent.artifact import path_digest
from saigon_agent.model_fetch import model_digest


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="saigon-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('saigon-operator')}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the sidecar (configured by SAIGON_AGENT_* environment variables)")
    add_logging_flags(run)
    fetch = sub.add_parser(
        "fetch-model", help="fetch and verify the base model (configured by SAIGON_MODEL_* environment variables)"
    )
    add_logging_flags(fetch)
    digest = sub.add_parser("digest", help="print the sha256 of an adapter archive or directory")
    digest.add_argument("path", type=Path)
    digest.add_argument(
        "--model",
        action="store_true",
        help="PATH is a base model directory: print the digest a huggingFace spec.baseModel.sha256 needs",
    )
    args = parser.parse_args(argv)

    if args.command == "digest":
        if not args.path.exists():
            print(f"{args.path}: no such file or directory", file=sys.stderr)
            return 2
        if args.model and not args.path.is_dir():
            print(f"{args.path}: --model needs a directory (an archive's digest is its sha256)", file=sys.stderr)
            return 2
        print(model_digest(args.path) if args.model else path_digest(args.path))
        return 0

    if args.command == "fetch-model":
        from saigon_agent import model_fetch

        try:
            setup_logging(args.log_level, log_format(args.log_format))
            return model_fetch.run(os.environ)
        except ValueError as exc:
            print(f"saigon-agent fetch-model: {exc}", file=sys.stderr)
            return 2

    from saigon_agent.app import main_loop
    from saigon_agent.config import AgentConfig

    try:
        setup_logging(args.log_level, log_format(args.log_format))
        config = AgentConfig.from_env()
    except ValueError as exc:
        print(f"saigon-agent: {exc}", file=sys.stderr)
        return 2
    main_loop(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
