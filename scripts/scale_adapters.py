#!/usr/bin/env python
"""Scale run (not a test): N SaigonAdapters against the test control plane.

Starts etcd + kube-apiserver (tests/controlplane), the real operator, one SaigonModel and
`--pods` runtime pods (real `saigon-runtime serve` + `saigon-agent run` processes, as in
the end-to-end tests), then applies `--adapters` SaigonAdapters at once and reports:

- how long until every adapter has a validated target (the operator alone),
- how long until every adapter is Ready on every pod (operator + agents + runtimes),
- the operator's resident memory and CPU time before and after,
- the API requests the operator made (and the agents), per adapter, by verb and resource:
  counted from the API server's audit log, which records every request with its user.

As the chart does on Kubernetes 1.36+, the API server puts the operator's finalizer on each new
adapter (its MutatingAdmissionPolicy); `--no-finalizer-policy` leaves that to the operator.

`--kill-operator-at N` SIGKILLs the operator once N adapters are Ready and starts a new one;
`--restart-apiserver-at N` stops the API server then (for `--outage` seconds) and starts it
again. Either reports the time from the fault to all Ready.

    .venv/bin/python scripts/scale_adapters.py --adapters 1000 --pods 1
    .venv/bin/python scripts/scale_adapters.py --adapters 10000 --pods 3 --kill-operator-at 3000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import kubernetes  # noqa: E402
import urllib3  # noqa: E402
from controlplane.cluster import ControlPlane  # noqa: E402
from saigon_e2e.kubelet import FakeKubelet  # noqa: E402
from saigon_e2e.operator_proc import OperatorProcess  # noqa: E402
from saigon_e2e.world import MODEL, World, install_crds, install_finalizer_policy, make_source_server  # noqa: E402
from saigon_runtime.testing.tiny import make_adapter, make_llama  # noqa: E402


def operator_usage(op: OperatorProcess) -> dict[str, float]:
    """Resident memory and CPU time of the operator process, from /proc."""
    assert op.process is not None
    pid = op.process.pid
    rss_kib = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return {"rss_mib": round(rss_kib / 1024, 1), "cpu_s": round(ticks / os.sysconf("SC_CLK_TCK"), 2)}


OPERATOR_USER = "saigon-operator"
# Every request but the script's own (it authenticates as the admin) is recorded, once, when it completes.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: None
    users: [saigon-test-admin]
  - level: Metadata
"""


def apiserver_args(workdir: Path, profiling: bool) -> tuple[str, ...]:
    """The audit log (every request counted by client) and, with `profiling`, /debug/pprof."""
    policy = workdir / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    return (
        f"--audit-policy-file={policy}",
        f"--audit-log-path={workdir / 'audit.log'}",
        "--audit-log-format=json",
        "--audit-log-mode=batch",
        "--audit-log-maxsize=0",
        *(("--profiling=true",) if profiling else ()),
    )


def api_requests(audit_log: Path, adapters: int) -> dict[str, object]:
    """Requests by client (the operator, the agents) and by verb/resource, from the audit log."""
    by_client: Counter[str] = Counter()
    operator: Counter[str] = Counter()
    conflicts: Counter[str] = Counter()
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        user = event.get("user", {}).get("username", "")
        client = "operator" if user == OPERATOR_USER else ("agents" if ":serviceaccount:" in user else "other")
        by_client[client] += 1
        if client == "operator":
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", event.get("requestURI", "?"))
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            what = f"{event.get('verb')} {resource}"
            operator[what] += 1
            if (event.get("responseStatus") or {}).get("code") == 409:
                conflicts[what] += 1
    return {
        "operator_per_adapter": round(by_client["operator"] / adapters, 2),
        "agents_per_adapter": round(by_client["agents"] / adapters, 2),
        "by_client": dict(by_client),
        "operator_by_verb": dict(operator.most_common()),
        "operator_conflicts": dict(conflicts),
    }


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def component_cpu(cluster: ControlPlane, kubelet: FakeKubelet | None) -> dict[str, float]:
    """CPU seconds so far of the API server and etcd, and of all agents and all runtimes together:
    unlike times, these do not depend on what else the machine runs."""
    out = {name: cpu_seconds(pid) for name, pid in cluster.pids.items()}
    pods = list(kubelet.pods.values()) if kubelet is not None else []
    out["agents"] = sum(cpu_seconds(p.agent.pid) for p in pods if p.agent is not None)
    out["runtimes"] = sum(cpu_seconds(p.runtime.pid) for p in pods if p.runtime is not None)
    mine = resource.getrusage(resource.RUSAGE_SELF)
    out["this script (creating and watching)"] = mine.ru_utime + mine.ru_stime
    return out


class PhaseTracker(threading.Thread):
    """Every adapter's phase and whether it has a target, from one list and then a watch (relisted
    when the watch breaks, e.g. while the API server restarts). Polling a list of 10,000 objects
    every few seconds was itself a large share of the API server's work during the run it measured."""

    def __init__(self, custom: kubernetes.client.CustomObjectsApi, namespace: str) -> None:
        super().__init__(name="phase-tracker", daemon=True)
        self.custom = custom
        self.namespace = namespace
        self.relists = 0
        self._lock = threading.Lock()
        self._state: dict[str, tuple[bool, bool]] | None = None  # name -> (has a target, Ready)

    def counts(self) -> tuple[int, int] | None:
        """(adapters with a target, adapters Ready); None until a listing succeeded."""
        with self._lock:
            if self._state is None:
                return None
            return sum(t for t, _ in self._state.values()), sum(r for _, r in self._state.values())

    @staticmethod
    def _seen(obj: dict[str, Any]) -> tuple[bool, bool]:
        status = obj.get("status") or {}
        return bool(status.get("target")), status.get("phase") == "Ready"

    def run(self) -> None:
        group = ("saigon.ai", "v1alpha1", self.namespace, "saigonadapters")
        while True:
            try:
                state: dict[str, tuple[bool, bool]] = {}
                token, version = "", ""
                while True:
                    page = json.loads(self.custom.list_namespaced_custom_object(
                        *group, limit=1000, _continue=token, _preload_content=False,
                    ).data)  # fmt: skip
                    state.update({o["metadata"]["name"]: self._seen(o) for o in page["items"]})
                    token = page["metadata"].get("continue") or ""
                    version = page["metadata"]["resourceVersion"]
                    if not token:
                        break
                with self._lock:
                    self._state = state
                self.relists += 1
                stream = self.custom.list_namespaced_custom_object(
                    *group, watch=True, resource_version=version, timeout_seconds=600, _preload_content=False,
                )  # fmt: skip
                buffer = b""
                for chunk in stream.stream(65536):
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            raise RuntimeError(str(event["object"].get("message")))
                        name = event["object"]["metadata"]["name"]
                        with self._lock:
                            if event["type"] == "DELETED":
                                state.pop(name, None)
                            else:
                                state[name] = self._seen(event["object"])
            except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError, OSError, ValueError,
                    RuntimeError) as exc:  # fmt: skip
                print(f"  phase watch: {str(exc)[:120]}; listing again", flush=True)
                time.sleep(1)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=1, help="runtime pods (0: the operator alone)")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--operator-arg", action="append", default=[], help="extra `saigon-operator run` argument (repeatable)"
    )
    parser.add_argument("--kill-operator-at", type=int, help="SIGKILL the operator once this many are Ready")
    parser.add_argument("--restart-apiserver-at", type=int, help="restart the API server once this many are Ready")
    parser.add_argument("--outage", type=float, default=5.0, help="seconds the API server stays down")
    parser.add_argument("--lease-duration", type=float, default=15.0, help="the operator's (the chart's default)")
    parser.add_argument(
        "--router",
        action="store_true",
        help="the model's router on: each user adapter is placed on 2 pods (spec.placement), not on all",
    )
    parser.add_argument(
        "--no-finalizer-policy",
        action="store_true",
        help="without the chart's MutatingAdmissionPolicy (Kubernetes < 1.36): the operator adds every finalizer",
    )
    parser.add_argument(
        "--apiserver-profiling",
        action="store_true",
        help="serve the API server's /debug/pprof (kubectl get --raw '/debug/pprof/profile?seconds=60')",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="saigon-scale-"))
    cluster = ControlPlane(extra_apiserver_args=apiserver_args(workdir, args.apiserver_profiling))
    api = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
    figures: dict[str, object] = {
        "adapters": args.adapters,
        "pods": args.pods,
        "operator_args": args.operator_arg,
        "lease_duration_s": args.lease_duration,
        "router": args.router,
        "finalizer_policy": not args.no_finalizer_policy,
        "cpus": os.cpu_count(),
        "load_before": load_average(),
    }
    kubelet: FakeKubelet | None = None
    operator: OperatorProcess | None = None
    sources = None
    try:
        install_crds(cluster)
        namespace = f"scale-{secrets.token_hex(3)}"
        kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
        if not args.no_finalizer_policy:
            install_finalizer_policy(cluster, namespace)
        sources, ca = make_source_server(workdir)
        operator = OperatorProcess(
            cluster, namespace, workdir, lease_duration=args.lease_duration, extra_args=args.operator_arg
        )
        operator.kubeconfig = cluster.kubeconfig_for_user(OPERATOR_USER, ("system:masters",))
        operator.start()
        base = make_llama(workdir / "base")
        world = World(cluster, api, namespace, workdir, sources, ca, base, operator)
        world.create_token_secret()
        operator.wait_leading()
        routing = {"router": {"enabled": True}} if args.router else {}
        world.kubectl_apply(
            world.model_manifest(replicas=args.pods, cache={"maxLoras": 8, "maxCpuLoras": 64}, **routing)
        )
        world.wait_for(lambda: cluster.kubectl("get", "deployment", MODEL, "-n", namespace), 30, "deployment")
        shared = workdir / "sources" / "team" / "shared"
        make_adapter(base, shared, rank=4, seed=1)
        if args.pods:
            kubelet = FakeKubelet(
                cluster, api, namespace, MODEL,
                base_model=base, workdir=workdir / "pods", ca_bundle=ca, sources_root=workdir / "sources",
            )  # fmt: skip
            world.kubelet = kubelet
            kubelet.start_pods(args.pods)
            kubelet.wait_runtimes_up()
        figures["operator_idle"] = operator_usage(operator)
        cpu_idle = component_cpu(cluster, kubelet)

        manifests = [
            world.adapter_manifest(
                f"a{i:05d}", user=f"{i:05d}", version="v1", source={"pvc": {"claimName": "team", "path": "shared"}}
            )
            for i in range(args.adapters)
        ]
        custom = kubernetes.client.CustomObjectsApi(api)

        def create(manifest: dict[str, object]) -> None:
            custom.create_namespaced_custom_object("saigon.ai", "v1alpha1", namespace, "saigonadapters", manifest)

        tracker = PhaseTracker(custom, namespace)
        tracker.start()
        # Created through the API by 16 threads: kubectl's client-side apply would dominate the figure.
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(create, manifests))
        figures["create_all_objects_s"] = round(time.perf_counter() - started, 2)

        targeted = served = fault = None
        peak_rss = 0.0
        cpu_before_fault = 0.0  # CPU time of the operators that were killed or exited
        last_cpu = 0.0
        restarts: list[str] = []
        deadline = started + args.timeout
        while time.perf_counter() < deadline:
            assert operator.process is not None
            if operator.process.poll() is not None:
                # As its Deployment would, start it again (it exits when it loses the lease).
                cpu_before_fault += last_cpu
                why = operator.log().strip().splitlines()[-1:] or ["?"]
                restarts.append(f"{time.perf_counter() - started:.1f}s: {why[0][-120:]}")
                print(f"  the operator exited ({restarts[-1]}); starting it again", flush=True)
                operator.log_path = workdir / f"operator-{len(restarts) + 1}.log"
                operator.start()
                operator.wait_leading(timeout=120)
            usage = operator_usage(operator)
            peak_rss, last_cpu = max(peak_rss, usage["rss_mib"]), usage["cpu_s"]
            counts = tracker.counts()
            if counts is None:
                time.sleep(2)
                continue
            with_target, ready = counts
            if targeted is None and with_target == args.adapters:
                targeted = time.perf_counter() - started
                print(f"all {args.adapters} targets published after {targeted:.1f}s", flush=True)
            if args.pods == 0 and targeted is not None:
                break
            if ready == args.adapters:
                served = time.perf_counter() - started
                break
            print(
                f"  {time.perf_counter() - started:6.1f}s: {with_target} with a target, {ready}/{args.adapters} ready",
                flush=True,
            )
            if fault is None and args.kill_operator_at is not None and ready >= args.kill_operator_at:
                cpu_before_fault += operator_usage(operator)["cpu_s"]
                operator.kill()
                fault = time.perf_counter()
                figures["fault"] = {
                    "kind": "operator SIGKILL",
                    "ready_at_fault": ready,
                    "at_s": round(fault - started, 2),
                }
                operator.log_path = workdir / "operator-after-kill.log"
                operator.start()
                print(f"  killed the operator at {ready} Ready; a new one started", flush=True)
            if fault is None and args.restart_apiserver_at is not None and ready >= args.restart_apiserver_at:
                cluster.stop_apiserver()
                fault = time.perf_counter()
                figures["fault"] = {
                    "kind": f"API server down {args.outage:g}s",
                    "ready_at_fault": ready,
                    "at_s": round(fault - started, 2),
                }
                time.sleep(args.outage)
                cluster.start_apiserver()
                print(f"  restarted the API server at {ready} Ready", flush=True)
                continue
            time.sleep(2)
        figures["time_to_all_targets_s"] = round(targeted, 2) if targeted is not None else None
        figures["time_to_all_ready_on_all_pods_s"] = round(served, 2) if served is not None else None
        if fault is not None and served is not None:
            figures["fault"]["to_all_ready_s"] = round(started + served - fault, 2)  # type: ignore[index]
        figures["load_after"] = load_average()
        cpu_now = component_cpu(cluster, kubelet)
        figures["cpu_s_during_run"] = {k: round(v - cpu_idle.get(k, 0.0), 1) for k, v in cpu_now.items()}
        after = operator_usage(operator)
        figures["operator_after"] = {**after, "cpu_s": round(after["cpu_s"] + cpu_before_fault, 2)}
        figures["operator_peak_rss_mib"] = peak_rss
        figures["operator_restarts"] = restarts
        # Losing the lease makes the operator start over in place (execv), which is no exit.
        figures["operator_lease_losses"] = operator.log().count("starting over as a standby")
        figures["operator_status_writes"] = operator.metric("saigon_operator_status_writes_total")
        figures["operator_reconciles"] = operator.metric("saigon_operator_reconciles_total")
        seconds = operator.metric("saigon_operator_reconcile_duration_seconds_sum", kind="SaigonAdapter")
        count = operator.metric("saigon_operator_reconcile_duration_seconds_count", kind="SaigonAdapter")
        figures["operator_adapter_reconcile_mean_s"] = round(seconds / count, 4) if count else None
        time.sleep(2)  # the audit log is written in batches
        figures["api_requests"] = api_requests(workdir / "audit.log", args.adapters)
        if kubelet is not None:
            figures["runtime_lists"] = [len(world.runtime_adapters(p)) for p in kubelet.pods.values()]
        figures["tracker_relists"] = tracker.relists
        print(json.dumps(figures, indent=2))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
        return 0 if (served is not None or (args.pods == 0 and targeted is not None)) else 1
    finally:
        if kubelet is not None:
            kubelet.stop()
        if operator is not None:
            operator.stop()
        if sources is not None:
            sources.close()
        api.close()
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
