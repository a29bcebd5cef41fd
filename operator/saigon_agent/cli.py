"""`saigon-agent run` (the sidecar) and `saigon-agent digest PATH` (the sha256 a SaigonAdapter needs)."""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

from saigon_contract.cli import ArgumentParser
from saigon_contract.logs import add_logging_flags, log_format, setup_logging

from saigon_agent.artifact import path_digest


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="saigon-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('saigon-operator')}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the sidecar (configured by SAIGON_AGENT_* environment variables)")
    add_logging_flags(run)
    digest = sub.add_parser("digest", help="print the sha256 of an adapter archive or directory")
    digest.add_argument("path", type=Path)
    args = parser.parse_args(argv)

    if args.command == "digest":
        if not args.path.exists():
            print(f"{args.path}: no such file or directory", file=sys.stderr)
            return 2
        print(path_digest(args.path))
        return 0

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
