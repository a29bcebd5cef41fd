"""Pure builders for a SaigonModel's router: the haproxy.cfg ConfigMap, the HAProxy Deployment
and its Service. Built only when spec.router.enabled; the handler deletes them otherwise.

The router's pods carry their own labels, never the model label: the operator reads every pod
with the model label as a runtime pod.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from saigon_contract import haproxy
from saigon_contract import resources as r
from saigon_contract.specs import ModelSpec
from saigon_operator.builders.model import Owner, http_service, names_for

ROUTER_CONTAINER = "haproxy"
ROUTER_LABEL = "saigon.ai/router"
CONFIG_HASH_ANNOTATION = "saigon.ai/router-config-hash"
HEALTH_PORT = 8404
# The official image runs HAProxy as this user.
HAPROXY_UID = 99


@dataclass(frozen=True)
class PlacedServers:
    """Placement routing: the model's ready pods as servers named after them, and the placement
    table's map (saigon_contract.placement) naming up to `ranks` owners per slot."""

    servers: tuple[haproxy.StaticServer, ...]
    owners_map: str
    ranks: int


def router_names(model: str) -> dict[str, str]:
    name = f"{model}-router"
    return {"deployment": name, "service": name, "config_map": name}


def router_selector(model: str) -> dict[str, str]:
    return {ROUTER_LABEL: model, r.COMPONENT_LABEL: "router"}


def _labels(model: str, *, with_model: bool) -> dict[str, str]:
    labels = {
        **router_selector(model),
        "app.kubernetes.io/name": "saigon",
        "app.kubernetes.io/instance": model,
        r.MANAGED_BY_LABEL: r.MANAGED_BY,
    }
    if with_model:  # objects only, never pods (see the module docstring)
        labels[r.MODEL_LABEL] = model
    return labels


def _meta(owner: Owner, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": _labels(owner.name, with_model=True),
        "ownerReferences": [owner.reference()],
    }


def server_slots(spec: ModelSpec) -> int:
    return spec.router.server_slots or max(8, 2 * spec.replicas)


def render_config(owner: Owner, spec: ModelSpec, placed: PlacedServers | None = None) -> str:
    router = spec.router
    config = haproxy.RouterConfig(
        port=spec.port,
        health_port=HEALTH_PORT,
        user_header=router.user_header,
        hash_balance_factor=router.hash_balance_factor,
        timeout_s=router.timeout_seconds,
        placement=(
            haproxy.PlacementRouting(f"{haproxy.CONFIG_DIR}/{haproxy.PLACEMENT_MAP_FILE}", placed.ranks)
            if placed is not None
            else None
        ),
    )
    if placed is not None:
        return haproxy.render(config, haproxy.StaticServers(placed.servers))
    fqdn = f"{names_for(owner.name)['headless']}.{owner.namespace}.svc.{router.cluster_domain}"
    return haproxy.render(config, haproxy.DnsServers(fqdn=fqdn, port=spec.port, slots=server_slots(spec)))


def build_router(owner: Owner, spec: ModelSpec, placed: PlacedServers | None = None) -> list[dict[str, Any]]:
    """The router's objects in creation order (its configuration before the pods that read it)."""
    config = build_config_map(owner, spec, placed)
    return [config, build_router_service(owner, spec), build_router_deployment(owner, spec, config)]


def router_kinds() -> list[tuple[str, str]]:
    """(kind, name suffix key) of every router object, for deletion when the router is turned off."""
    return [("Deployment", "deployment"), ("Service", "service"), ("ConfigMap", "config_map")]


def build_config_map(owner: Owner, spec: ModelSpec, placed: PlacedServers | None = None) -> dict[str, Any]:
    data = {haproxy.CONFIG_FILE: render_config(owner, spec, placed)}
    if placed is not None:
        data[haproxy.PLACEMENT_MAP_FILE] = placed.owners_map
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(owner, router_names(owner.name)["config_map"]),
        "data": data,
    }


def build_router_service(owner: Owner, spec: ModelSpec) -> dict[str, Any]:
    meta = _meta(owner, router_names(owner.name)["service"])
    return http_service(meta, router_selector(owner.name), spec.port, type="ClusterIP")


def build_router_deployment(owner: Owner, spec: ModelSpec, config_map: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.sha256(config_map["data"][haproxy.CONFIG_FILE].encode())
    if haproxy.PLACEMENT_MAP_FILE in config_map["data"]:  # (without one, the hash of routers before placement)
        digest.update(b"\0" + config_map["data"][haproxy.PLACEMENT_MAP_FILE].encode())
    config_hash = digest.hexdigest()[:16]
    resources = {}
    if spec.router.resources.requests:
        resources["requests"] = dict(sorted(spec.router.resources.requests.items()))
    if spec.router.resources.limits:
        resources["limits"] = dict(sorted(spec.router.resources.limits.items()))
    container = {
        "name": ROUTER_CONTAINER,
        "image": spec.router.image,
        "imagePullPolicy": "IfNotPresent",
        # The image's entrypoint runs `haproxy -W -db <args>` (master-worker, in the foreground).
        "args": ["-f", f"{haproxy.CONFIG_DIR}/{haproxy.CONFIG_FILE}"],
        "ports": [
            {"name": "http", "containerPort": spec.port, "protocol": "TCP"},
            {"name": "router-health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
        ],
        "resources": resources or {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": [{"name": "config", "mountPath": haproxy.CONFIG_DIR, "readOnly": True}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "readinessProbe": _probe(period=5, failures=2),
        "livenessProbe": _probe(period=10, failures=3),
    }
    labels = _labels(owner.name, with_model=False)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(owner, router_names(owner.name)["deployment"]),
        "spec": {
            "replicas": spec.router.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": router_selector(owner.name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                # A new configuration rolls the routers (HAProxy reads its file once).
                "metadata": {"labels": labels, "annotations": {CONFIG_HASH_ANNOTATION: config_hash}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": HAPROXY_UID,
                        "runAsGroup": HAPROXY_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {"name": router_names(owner.name)["config_map"]}}],
                },
            },
        },
    }


def _probe(*, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/healthz", "port": "router-health"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 3,
    }
