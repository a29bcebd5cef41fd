"""`saigon-operator run`: hold the leader Lease, then run the kopf operator; serve /healthz and /metrics."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from saigon_contract.cli import ArgumentParser, whole_number_at_least
from saigon_contract.kube import Credentials, CredentialsError, KubeClient
from saigon_contract.logs import add_logging_flags, log_format, setup_logging

from saigon_operator.leader import LeaderElector, LeaseSettings, RenewalThread
from saigon_operator.progress import Progress
from saigon_operator.settings import OperatorConfig

log = logging.getLogger("saigon_operator")

EXIT_LOST_LEASE = 3


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="saigon-operator", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('saigon-operator')}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (default)")
    run.add_argument(
        "--agent-image",
        default=os.environ.get("SAIGON_AGENT_IMAGE", ""),
        help="image of the agent sidecar (SAIGON_AGENT_IMAGE; normally the operator's own image)",
    )
    run.add_argument("--agent-image-pull-policy", default="IfNotPresent", choices=["Always", "IfNotPresent", "Never"])
    run.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG, else in-cluster")
    run.add_argument("--http-host", default="0.0.0.0")
    run.add_argument("--http-port", type=int, default=8080, help="serves /healthz and /metrics")
    run.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE"),
        help="namespace of the leader Lease ($POD_NAMESPACE, else the first --namespace, else default)",
    )
    run.add_argument("--lease-name", default="saigon-operator")
    run.add_argument("--lease-duration", type=float, default=15.0, help="seconds")
    run.add_argument("--identity", default=None, help="this replica's name in the Lease (default host-pid)")
    run.add_argument("--unload-timeout", type=float, default=300.0, help="seconds a deletion waits for pods")
    run.add_argument(
        "--stall-timeout",
        type=float,
        default=120.0,
        help="seconds: /healthz fails once SaigonAdapters wait and no handler has finished for this long",
    )
    run.add_argument(
        "--workers",
        type=whole_number_at_least(1),
        default=OperatorConfig.workers,
        help="SaigonAdapters reconciled at once (the others wait their turn, as keys)",
    )
    add_logging_flags(run)
    return parser


def config_from_args(args: argparse.Namespace) -> OperatorConfig:
    if not args.agent_image:
        raise SystemExit("saigon-operator: --agent-image (or SAIGON_AGENT_IMAGE) is required")
    namespaces = tuple(args.namespace)
    return OperatorConfig(
        agent_image=args.agent_image,
        agent_image_pull_policy=args.agent_image_pull_policy,
        namespaces=namespaces,
        kubeconfig=args.kubeconfig,
        http_host=args.http_host,
        http_port=args.http_port,
        lease_namespace=args.lease_namespace or (namespaces[0] if namespaces else "default"),
        lease_name=args.lease_name,
        lease_duration_s=args.lease_duration,
        identity=args.identity or f"{socket.gethostname()}-{os.getpid()}",
        unload_timeout_s=args.unload_timeout,
        stall_timeout_s=args.stall_timeout,
        workers=args.workers,
    )


async def run(config: OperatorConfig, credentials: Credentials) -> int:
    if config.kubeconfig:
        os.environ["KUBECONFIG"] = config.kubeconfig  # kopf's login reads it too
    import saigon_operator.main  # noqa: F401  (registers the handlers)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)

    kube = KubeClient(credentials)
    elector = LeaderElector(
        kube,
        LeaseSettings.for_duration(config.lease_namespace, config.lease_name, config.lease_duration_s),
        config.identity,
    )
    elector.on_lost = _start_over
    operator_task: asyncio.Task[None] | None = None
    progress = Progress(config.stall_timeout_s)

    def health() -> str | None:
        if operator_task is not None and operator_task.done():
            return "the operator stopped"
        return progress.stalled() if operator_task is not None else None

    http = await _serve_http(config, health)
    try:
        acquiring = asyncio.create_task(elector.acquire())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([acquiring, stopping], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            acquiring.cancel()
            return 0
        kopf_stop: asyncio.Future[None] = loop.create_future()
        operator_task = asyncio.create_task(
            kopf.operator(
                standalone=True,
                clusterwide=not config.namespaces,
                namespaces=list(config.namespaces),
                stop_flag=kopf_stop,
                memo=kopf.Memo(config=config, progress=progress, may_write=elector.check_may_act),
            ),
            name="kopf",
        )
        renewal = RenewalThread(elector, credentials)
        renewal.start()
        holding = asyncio.create_task(renewal.wait())
        await asyncio.wait([operator_task, holding, stopping], return_when=asyncio.FIRST_COMPLETED)
        lost = holding.done()
        if not kopf_stop.done():
            kopf_stop.set_result(None)
        renewal.stop()
        holding.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(operator_task, timeout=30)
        if lost:
            return EXIT_LOST_LEASE
        if operator_task.done() and not operator_task.cancelled() and operator_task.exception() is not None:
            log.error("the operator stopped: %r", operator_task.exception())
            return 1
        return 0
    finally:
        await elector.release()
        await http.cleanup()
        await kube.close()


def _start_over() -> None:
    """Past the renew deadline a standby may already lead: stop at once, before any handler or kopf
    itself writes again, and start over in place as a standby. `execv` replaces the whole process
    as `_exit` ends it (kopf's writes, which the write guard does not see, stop the same instant),
    but the container keeps running: no restart, no CrashLoopBackOff after an API server outage."""
    log.error("leader election: lost the lease; starting over as a standby")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # noqa: S606  (this same program)
    except OSError:
        os._exit(EXIT_LOST_LEASE)


async def _serve_http(config: OperatorConfig, failure: Callable[[], str | None]) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        why = failure()
        if why is None:
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "failed", "reason": why}, status=503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.http_host, config.http_port).start()
    return runner


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        fmt = log_format(args.log_format)
        setup_logging(args.log_level, fmt)
        config = dataclasses.replace(config_from_args(args), log_format=fmt)
        credentials = Credentials.load(config.kubeconfig)
    except (ValueError, CredentialsError) as exc:
        print(f"saigon-operator: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(run(config, credentials))


if __name__ == "__main__":
    sys.exit(main())
