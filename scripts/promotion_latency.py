#!/usr/bin/env python
"""Promotion benchmark (not a test): how much a rollout costs the requests served meanwhile.

Starts the test control plane, the real operator and `--replicas` runtime pods (real
`saigon-runtime serve` + `saigon-agent run` under the fake kubelet, as in the end-to-end
tests), applies `--adapters` user adapters (the ~5 MB test LoRA, rank 80, on all seven
projections), then keeps `--clients` HTTP clients sending completions for one of them to every
replica, round robin, while it alternates:

- a steady window of `--window` seconds with nothing changing,
- a promotion round: a new version of every adapter applied at once (Immediate promotions:
  each agent fetches, verifies and loads every new version), timed until all are promoted;

for `--rounds` rounds. Interleaving the two keeps a noisy machine's drift out of the ratio.

CPU is shared as on a cluster's GPU node: the runtime container asks for 500m, the agent for
nothing, and the fake kubelet weighs their processes as a kubelet weighs their cgroups (the
agent's own low-priority threads yield only within its container). etcd, the API server and the
operator, which a cluster runs on other nodes, get the lowest weight, and so does this script
(its kubectl applies and status polls) once the clients run, from a process and a scheduling
group of their own; `--shared-control-plane` gives them all the same weight as the pods instead.

Prints p50/p99 of the steady windows and of the promotion rounds, their ratio, and the
failed requests (any non-200 or a connection error).

    .venv/bin/python scripts/promotion_latency.py --json docs/scale/promotion.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import kubernetes  # noqa: E402
import requests  # noqa: E402
from controlplane.cluster import ControlPlane  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from saigon_e2e.artifacts import Artifact, make_artifact  # noqa: E402
from saigon_e2e.kubelet import lead_a_session, weigh  # noqa: E402
from saigon_e2e.load import Answer, LoadProcess, summarize  # noqa: E402
from saigon_e2e.world import ADMIN, World, running_world  # noqa: E402

RUNTIME_CPU = "500m"  # three replicas' requests fit the 2 cores


def promoted(world: World, name: str, version: str) -> bool:
    status = world.served_everywhere(name, version)
    return bool(status) and status["promotion"]["phase"] == "Stable"  # type: ignore[index]


def last_load(world: World, names: list[str], version: str) -> float:
    """When the last replica loaded `version` of any of `names` (from the pods' loadedAt in status),
    on the monotonic clock the clients time answers with: a round ends there, however late this
    script's polls see it."""
    loaded = [
        datetime.fromisoformat(pod["loadedAt"]).timestamp()
        for name in names
        for pod in ((world.get_adapter(name) or {}).get("status") or {}).get("pods") or []
        if pod.get("version") == version and pod.get("loadedAt")
    ]
    return max(loaded) - (time.time() - time.monotonic())


def figures(answers: list[Answer]) -> dict[str, float | int]:
    summary = summarize(answers)
    return {
        "requests": summary.requests,
        "failed": summary.failed,
        "p50_ms": round(summary.p50_ms, 1),
        "p99_ms": round(summary.p99_ms, 1),
    }


def slowest(answers: list[Answer], rounds: list[tuple[float, float]], urls: list[str], n: int = 10) -> list[str]:
    """The slowest answers of the promotion rounds: when each started into its round, on which
    replica, and the versions it names (where a promotion's cost lands)."""
    lines = []
    for a in sorted(answers, key=lambda a: a.latency_s, reverse=True)[:n]:
        start = max(s for s, _ in rounds if s <= a.started)
        lines.append(
            f"{a.latency_s * 1000:.0f} ms, started {a.started - start:.2f}s into its round, "
            f"replica {urls.index(a.url)}, {'/'.join(a.versions) or '-'}"
        )
    return lines


def full_collections(world: World) -> list[dict[str, float]]:
    """Each runtime's full garbage collections so far (`saigon_gc_pause_seconds`, generation 2):
    each one pauses every request of its replica."""
    out = []
    for pod in world.pods:
        text = requests.get(f"{pod.runtime_url}/metrics", headers=ADMIN, timeout=10).text
        samples = {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("saigon_gc_pause_seconds")
            and s.labels.get("generation") == "2"
            and "le" not in s.labels
        }
        out.append({"count": samples.get("saigon_gc_pause_seconds_count", 0.0),
                    "seconds": round(samples.get("saigon_gc_pause_seconds_sum", 0.0), 3)})  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--adapters", type=int, default=8, help="adapters promoted together in each round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--window", type=float, default=20.0, help="seconds of each steady window")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--shared-control-plane", action="store_true",
                        help="etcd, the API server and the operator weigh as much as the pods")  # fmt: skip
    args = parser.parse_args()
    lead_a_session()

    workdir = Path(tempfile.mkdtemp(prefix="saigon-promotion-"))
    cluster = ControlPlane()
    api = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        spec = {"resources": {"requests": {"cpu": RUNTIME_CPU}}}
        with running_world(cluster, api, workdir, prefix="promotion", replicas=args.replicas, model_spec=spec) as world:
            if not args.shared_control_plane:
                assert world.operator.process is not None
                for pid in [*cluster.pids.values(), world.operator.process.pid]:
                    weigh(pid, 19)
            names = [f"p{i:02d}" for i in range(args.adapters)]
            artifacts: dict[tuple[str, int], Artifact] = {}
            for i, name in enumerate(names):
                for version in range(args.rounds + 1):
                    artifacts[(name, version)] = make_artifact(
                        world.base_model, workdir / "artifacts" / f"{name}-{version}", seed=1000 * version + i
                    )

            def apply_round(version: int) -> None:
                world.kubectl_apply(*(
                    world.adapter_manifest(name, user=name, version=f"v{version}", artifact=artifacts[(name, version)])
                    for name in names
                ))  # fmt: skip

            apply_round(0)
            for name in names:
                world.wait_for(lambda n=name: promoted(world, n, "v0"), 300, f"{name} v0 served everywhere")
            steady: list[tuple[float, float]] = []
            promoting: list[tuple[float, float]] = []
            urls = [pod.runtime_url for pod in world.pods]
            # The clients run in a process of their own (as a user's do); status is polled 4 times a second.
            with LoadProcess(urls, f"user_{names[0]}", clients=args.clients) as load:
                if not args.shared_control_plane:
                    weigh(os.getpid(), 19)  # this script's polls and kubectl, like the control plane
                time.sleep(2.0)  # the first answers warm each runtime up
                gc_before = full_collections(world)
                for version in range(1, args.rounds + 1):
                    started = time.monotonic()
                    time.sleep(args.window)
                    steady.append((started, time.monotonic()))
                    started = time.monotonic()
                    apply_round(version)
                    for name in names:
                        world.wait_for(
                            lambda n=name, v=version: promoted(world, n, f"v{v}"),
                            300,
                            f"{name} v{version} promoted",
                            interval=0.25,
                        )
                    promoting.append((started, max(started, last_load(world, names, f"v{version}"))))
                    print(f"  round {version}: promoted {len(names)} adapters in {promoting[-1][1] - started:.1f}s",
                          flush=True)  # fmt: skip
                    time.sleep(1.0)  # the old version's unload and file removal, outside both windows
            steady_answers = [a for s, e in steady for a in load.between(s, e)]
            promotion_answers = [a for s, e in promoting for a in load.between(s, e)]
            out: dict[str, object] = {
                "replicas": args.replicas,
                "adapters_per_round": args.adapters,
                "rounds": args.rounds,
                "clients": args.clients,
                "runtime_cpu_request": RUNTIME_CPU,
                "shared_control_plane": args.shared_control_plane,
                "cpus": os.cpu_count(),
                "load_average": list(os.getloadavg()),
                "steady": figures(steady_answers),
                "promotion": figures(promotion_answers),
                "promotion_round_s": [round(e - s, 2) for s, e in promoting],
                "failed_total": sum(1 for a in load.answers if a.status != 200),
                "slowest_during_promotions": slowest(promotion_answers, promoting, urls),
                # Full collections on each replica while the clients ran (steady windows and rounds).
                "full_gc_per_replica": [
                    {k: round(after[k] - before[k], 3) for k in after}
                    for before, after in zip(gc_before, full_collections(world), strict=True)
                ],
            }
            p99_steady = out["steady"]["p99_ms"]  # type: ignore[index]
            out["p99_ratio"] = round(out["promotion"]["p99_ms"] / p99_steady, 3) if p99_steady else None  # type: ignore[index]
            p50_steady = out["steady"]["p50_ms"]  # type: ignore[index]
            out["p50_ratio"] = round(out["promotion"]["p50_ms"] / p50_steady, 3) if p50_steady else None  # type: ignore[index]
            print(json.dumps(out, indent=2))
            if args.json:
                args.json.write_text(json.dumps(out, indent=2) + "\n")
            return 0 if out["failed_total"] == 0 else 1
    finally:
        api.close()
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
