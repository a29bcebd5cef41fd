"""The router a SaigonModel asks for (pure builders), and haproxy.cfg checked by real HAProxy."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from saigon_contract import haproxy
from saigon_contract import resources as r
from saigon_contract.agent_env import ENV as AGENT_ENV
from saigon_contract.specs import SpecError, parse_model_spec
from saigon_operator.builders.model import Defaults, Owner, build_deployment, selector_labels
from saigon_operator.builders.router import CONFIG_HASH_ANNOTATION, build_router, render_config

OWNER = Owner(name="llama", namespace="ml", uid="1234")


def spec(router: dict[str, Any] | None = None, **overrides: Any):  # type: ignore[no-untyped-def]
    raw: dict[str, Any] = {
        "baseModel": {"path": "/models/llama"},
        "image": "saigon/runtime:1",
        "tokenSecretRef": {"name": "tokens"},
        "replicas": 3,
        "router": {"enabled": True, **(router or {})},
    }
    raw.update(overrides)
    return parse_model_spec(raw)


def haproxy_check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("haproxy")
    assert binary, "haproxy is missing: run scripts/system-deps.sh (Debian package haproxy)"
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    return subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True)


def test_the_router_is_off_unless_asked_for() -> None:
    plain = parse_model_spec({"baseModel": {"path": "/m"}, "image": "i", "tokenSecretRef": {"name": "t"}})
    assert plain.router.enabled is False and plain.gie_metrics is False


def test_router_objects_are_owned_and_its_pods_are_not_runtime_pods() -> None:
    config_map, service, deployment = build_router(OWNER, spec())
    assert [o["kind"] for o in (config_map, service, deployment)] == ["ConfigMap", "Service", "Deployment"]
    for obj in (config_map, service, deployment):
        assert obj["metadata"]["name"] == "llama-router" and obj["metadata"]["namespace"] == "ml"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "1234"
        assert obj["metadata"]["labels"][r.MODEL_LABEL] == "llama"
    pod = deployment["spec"]["template"]
    # The operator treats every pod with the model label as a runtime pod.
    assert r.MODEL_LABEL not in pod["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert not set(selector_labels("llama").items()) <= set(pod["metadata"]["labels"].items())
    (container,) = pod["spec"]["containers"]
    assert container["image"].startswith("haproxy:") and container["image"].split(":")[1][0].isdigit()
    assert container["args"] == ["-f", "/usr/local/etc/haproxy/haproxy.cfg"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "router-health"}
    assert pod["spec"]["volumes"] == [{"name": "config", "configMap": {"name": "llama-router"}}]
    assert deployment["spec"]["replicas"] == 2
    assert service["spec"]["ports"][0]["port"] == 8001


def test_the_configuration_follows_the_spec_and_rolls_the_routers() -> None:
    text = render_config(OWNER, spec())
    assert "server-template rt 8 llama-pods.ml.svc.cluster.local:8001 resolvers cluster" in text
    assert "balance hash var(txn.saigon_user)" in text and "hash-type consistent" in text
    assert "hash-balance-factor 150" in text
    assert "req.hdr(X-Saigon-User)" in text and "req.hdr(Authorization)" in text
    assert "option httpchk GET /readyz" in text and "http-check expect status 200" in text
    assert "retry-on conn-failure empty-response 503" in text and "option redispatch" in text
    assert "\n    log " not in text  # no access log: it would carry user ids
    custom = spec({"userHeader": "X-Tenant", "hashBalanceFactor": 0, "serverSlots": 32, "clusterDomain": "k.local",
                   "timeoutSeconds": 120})  # fmt: skip
    other = render_config(OWNER, custom)
    assert "req.hdr(X-Tenant)" in other and "hash-balance-factor" not in other
    assert "server-template rt 32 llama-pods.ml.svc.k.local:8001" in other and "timeout server 120s" in other
    first = build_router(OWNER, spec())[2]["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
    second = build_router(OWNER, custom)[2]["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
    assert first != second


def test_haproxy_accepts_both_the_cluster_and_the_static_configuration(tmp_path: Path) -> None:
    cluster = haproxy_check(tmp_path, render_config(OWNER, spec()))
    assert cluster.returncode == 0, cluster.stdout + cluster.stderr
    servers = haproxy.StaticServers((haproxy.StaticServer("rt1", "127.0.0.1", 8001),))
    for affinity in (True, False):
        text = haproxy.render(haproxy.RouterConfig(port=18001, affinity=affinity), servers)
        assert ("balance roundrobin" in text) is not affinity
        local = haproxy_check(tmp_path, text)
        assert local.returncode == 0, local.stdout + local.stderr


def test_bad_router_settings_are_refused() -> None:
    with pytest.raises(SpecError, match="hashBalanceFactor"):
        spec({"hashBalanceFactor": 90})
    with pytest.raises(SpecError, match="userHeader"):
        spec({"userHeader": "X Bad"})
    with pytest.raises(ValueError, match="header"):
        haproxy.render(haproxy.RouterConfig(port=1, user_header="a b"), haproxy.StaticServers(()))
    with pytest.raises(ValueError, match="at least one server"):
        haproxy.render(haproxy.RouterConfig(port=1), haproxy.StaticServers(()))


def test_gie_metrics_are_opt_in_on_the_runtime() -> None:
    defaults = Defaults(agent_image="saigon/operator:1")

    def runtime_env(**overrides: Any) -> dict[str, Any]:
        pod = build_deployment(OWNER, spec(**overrides), defaults)["spec"]["template"]["spec"]
        return {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}

    assert "SAIGON_GIE_METRICS" not in runtime_env()
    assert runtime_env(gieMetrics=True)["SAIGON_GIE_METRICS"] == "true"


def test_agent_metrics_name_adapters_only_when_the_model_opts_in() -> None:
    def agent_env(**overrides: Any) -> dict[str, Any]:
        pod = build_deployment(OWNER, spec(**overrides), Defaults(agent_image="saigon/operator:1"))
        (agent,) = pod["spec"]["template"]["spec"]["initContainers"]
        return {e["name"]: e.get("value") for e in agent["env"]}

    assert AGENT_ENV.METRICS_ADAPTER_LABELS not in agent_env()
    assert agent_env(agent={"metricsAdapterLabels": True})[AGENT_ENV.METRICS_ADAPTER_LABELS] == "true"


def test_the_hot_set_is_kept_on_a_writable_volume_that_outlives_container_restarts() -> None:
    pod = build_deployment(OWNER, spec(), Defaults(agent_image="saigon/operator:1"))["spec"]["template"]["spec"]
    (runtime,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in runtime["env"]}
    mounts = {m["mountPath"]: m for m in runtime["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert env["SAIGON_HOTSET_FILE"] == "/tmp/saigon-hotset.json"
    tmp = mounts["/tmp"]
    assert not tmp.get("readOnly") and "emptyDir" in volumes[tmp["name"]]
    assert mounts["/var/lib/saigon/adapters"]["readOnly"] is True  # why the default place will not do
