"""Pure builders: a SaigonModel's spec in, the manifests of its children out.

No API calls here. Every child carries an owner reference to the model and the
model label; the pod template carries a hash of itself so that any change to it
rolls the Deployment.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from saigon_contract import resources as r
from saigon_contract.agent_env import ENV as AGENT_ENV
from saigon_contract.agent_env import FETCH_MODEL_ENV
from saigon_contract.logs import LOG_FORMAT_ENV
from saigon_contract.specs import DownloadOptions, ModelSpec, Resources, TopologySpreadConstraint
from saigon_operator.builders.credentials import SALT_KEY, TOKENS_KEY, build_secret

# The runtime's environment variables (their one definition is runtime/saigon_runtime/config.py;
# the operator image has no runtime package, so a cross-part test checks these names against it).
RUNTIME_ENV = {
    "base_model": "SAIGON_BASE_MODEL",
    "adapters_dir": "SAIGON_ADAPTERS_DIR",
    "device": "SAIGON_DEVICE",
    "max_loras": "SAIGON_CACHE_SIZE",
    "max_cpu_loras": "SAIGON_CPU_CACHE_SIZE",
    "max_rank": "SAIGON_MAX_RANK",
    "host": "SAIGON_HOST",
    "port": "SAIGON_PORT",
    "admin_token": "SAIGON_ADMIN_TOKEN",
    "inference_tokens": "SAIGON_INFERENCE_TOKENS",
    "gie_metrics": "SAIGON_GIE_METRICS",
    "hotset_file": "SAIGON_HOTSET_FILE",
    "inference_tokens_file": "SAIGON_INFERENCE_TOKENS_FILE",
    "mesh_dir": "SAIGON_MESH_DIR",
    "user_store": "SAIGON_USER_STORE",
    "user_store_dsn": "SAIGON_USER_STORE_DSN",
    "mesh_default": "SAIGON_MESH_DEFAULT",
    "mesh_max_tokens": "SAIGON_MESH_MAX_TOKENS",
    "audit_dest": "SAIGON_AUDIT_DEST",
    "log_dir": "SAIGON_LOG_DIR",
    "audit_salt": "SAIGON_AUDIT_SALT",
    "audit_raw_user_ids": "SAIGON_AUDIT_RAW_USER_IDS",
    "log_prompts": "SAIGON_LOG_PROMPTS",
    "drain_timeout": "SAIGON_DRAIN_TIMEOUT",
    "dtype": "SAIGON_DTYPE",
    "max_batch_size": "SAIGON_MAX_BATCH",
    "max_queue": "SAIGON_MAX_QUEUE",
    "max_new_tokens": "SAIGON_MAX_NEW_TOKENS",
    "memory_utilization": "SAIGON_MEMORY_UTILIZATION",
    "demand_url": "SAIGON_DEMAND_URL",
    "watch_interval_s": "SAIGON_WATCH_INTERVAL",
}

# Where the runtime container finds what the operator gives it.
TOKENS_MOUNT = "/var/run/saigon/inference"
USER_DATA_MOUNT = "/var/lib/saigon/users"
AUDIT_MOUNT = "/var/log/saigon"

# Seconds between a runtime pod's deletion and its SIGTERM (a preStop sleep). The pod leaves its
# Service's endpoints at deletion; kube-proxy follows within a second or two, the router's DNS
# (CoreDNS's 5 s TTL plus HAProxy's `hold valid` of 5 s) within about ten. Until SIGTERM the
# runtime serves as usual, so requests sent on stale endpoints still succeed.
PRESTOP_SLEEP_S = 10
# Kept between the drain deadline and the kubelet's SIGKILL: the cleanup (engine stop, hot set,
# audit flush) runs in it.
STOP_MARGIN_S = 5

RUNTIME_CONTAINER = "runtime"
AGENT_CONTAINER = "agent"
FETCH_MODEL_CONTAINER = "fetch-model"
# Where the agent and the base-model fetch find a private CA and the web identity token.
CA_BUNDLE_MOUNT = "/etc/saigon/ca"
WEB_IDENTITY_MOUNT = "/var/run/secrets/saigon/web-identity"
RUNTIME_UID = 10001


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": r.API_VERSION,
            "kind": r.MODEL_KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class Defaults:
    """Operator-wide settings that shape pods (from the operator's own flags)."""

    agent_image: str
    agent_image_pull_policy: str = "IfNotPresent"
    # The operator's own --log-format, passed on to the runtime and agent containers.
    log_format: str = "text"


def names_for(model: str) -> dict[str, str]:
    return {
        "deployment": model,
        "service": model,
        "headless": f"{model}-pods",
        "pdb": model,
        "service_account": f"{model}-agent",
        "role": f"{model}-agent",
        "role_binding": f"{model}-agent",
        "inference_tokens": f"{model}-inference-tokens",
        "audit_salt": f"{model}-audit-salt",
    }


def selector_labels(model: str) -> dict[str, str]:
    return {r.MODEL_LABEL: model, r.COMPONENT_LABEL: "runtime"}


def selector_string(model: str) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(model).items()))


def _labels(model: str) -> dict[str, str]:
    return {
        **selector_labels(model),
        "app.kubernetes.io/name": "saigon",
        "app.kubernetes.io/instance": model,
        r.MANAGED_BY_LABEL: r.MANAGED_BY,
    }


def child_meta(owner: Owner, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": _labels(owner.name),
        "ownerReferences": [owner.reference()],
    }


def build_children(
    owner: Owner, spec: ModelSpec, defaults: Defaults, *, secret_names: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """All children in creation order (identity and RBAC before the pods that use them)."""
    return [
        build_service_account(owner),
        build_role(owner, secret_names=secret_names),
        build_role_binding(owner, spec.pod.service_account_name),
        build_service(owner, spec),
        build_headless_service(owner, spec),
        build_pdb(owner, spec),
        build_deployment(owner, spec, defaults),
    ]


def build_tokens_secret(owner: Owner, text: str) -> dict[str, Any]:
    """The inference credentials (`token=user_id` lines) the runtime reads as a mounted file."""
    return build_secret(child_meta(owner, names_for(owner.name)["inference_tokens"]), TOKENS_KEY, text)


def build_audit_salt_secret(owner: Owner, salt: str) -> dict[str, Any]:
    """The per-install salt of the audit log's user-id hashes (created once, never changed)."""
    return build_secret(child_meta(owner, names_for(owner.name)["audit_salt"]), SALT_KEY, salt)


def build_service_account(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": child_meta(owner, names_for(owner.name)["service_account"]),
        # The token is projected into the agent container only (see _agent_token_volume).
        "automountServiceAccountToken": False,
    }


def build_role(owner: Owner, *, secret_names: tuple[str, ...] = ()) -> dict[str, Any]:
    """Exactly what the agent does: read its model's adapters, annotate and gate its own pod.

    `secret_names`: credential Secrets of the S3 sources of this model's adapters.
    """
    rules: list[dict[str, Any]] = [
        {"apiGroups": [r.GROUP], "resources": [r.ADAPTER_PLURAL], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]},
    ]
    if secret_names:
        rules.append(
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": sorted(secret_names), "verbs": ["get"]}
        )
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": child_meta(owner, names_for(owner.name)["role"]),
        "rules": rules,
    }


def pod_service_account(owner: Owner, spec: ModelSpec) -> str:
    """The runtime pods' ServiceAccount: the user's (spec.pod.serviceAccountName), else <model>-agent."""
    return spec.pod.service_account_name or names_for(owner.name)["service_account"]


def build_role_binding(owner: Owner, service_account: str | None = None) -> dict[str, Any]:
    """Binds the agent's Role to the pods' ServiceAccount: <model>-agent, or the one the user named
    (the operator grants it the agent's rules and nothing else; the user owns the account)."""
    names = names_for(owner.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": child_meta(owner, names["role_binding"]),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": names["role"]},
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": service_account or names["service_account"],
                "namespace": owner.namespace,
            }
        ],
    }


def http_service(metadata: dict[str, Any], selector: dict[str, str], port: int, **spec: Any) -> dict[str, Any]:
    """A Service with one `http` port onto the pods' `http` container port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            **spec,
            "selector": selector,
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_service(owner: Owner, spec: ModelSpec) -> dict[str, Any]:
    meta = child_meta(owner, names_for(owner.name)["service"])
    return http_service(meta, selector_labels(owner.name), spec.port, type="ClusterIP")


def build_headless_service(owner: Owner, spec: ModelSpec) -> dict[str, Any]:
    """Per-pod DNS and endpoints, for clients (and a router) that pick a replica themselves."""
    meta = child_meta(owner, names_for(owner.name)["headless"])
    return http_service(meta, selector_labels(owner.name), spec.port, clusterIP="None", publishNotReadyAddresses=False)


def build_pdb(owner: Owner, spec: ModelSpec) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_meta(owner, names_for(owner.name)["pdb"]),
        "spec": {
            "maxUnavailable": spec.pod_disruption_budget.max_unavailable,
            "selector": {"matchLabels": selector_labels(owner.name)},
        },
    }


def build_deployment(owner: Owner, spec: ModelSpec, defaults: Defaults) -> dict[str, Any]:
    template = build_pod_template(owner, spec, defaults)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_meta(owner, names_for(owner.name)["deployment"]),
        "spec": {
            "replicas": spec.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(owner.name)},
            # See RolloutOptions: no surge pod with GPUs (a full pool has no room), else surge one.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": spec.rollout.resolved(spec.gpus)},
            "template": template,
        },
    }


def build_pod_template(owner: Owner, spec: ModelSpec, defaults: Defaults) -> dict[str, Any]:
    pod_spec = _pod_spec(owner, spec, defaults)
    # The user's labels and annotations first: the CRD and the spec model refuse the operator's keys.
    labels = {**spec.pod.labels, **_labels(owner.name)}
    annotations = dict(spec.pod.annotations)
    annotations[r.SPEC_HASH_ANNOTATION] = spec_hash(labels, pod_spec, spec.pod.annotations)
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec}


def spec_hash(labels: dict[str, str], pod_spec: dict[str, Any], annotations: dict[str, str] | None = None) -> str:
    shaped: dict[str, Any] = {"labels": labels, "spec": pod_spec}
    if annotations:  # absent when there are none, so templates without them keep their hash
        shaped["annotations"] = annotations
    blob = json.dumps(shaped, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _pod_spec(owner: Owner, spec: ModelSpec, defaults: Defaults) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [
        {"name": "adapters", "emptyDir": _empty_dir(spec)},
        {"name": "runtime-tmp", "emptyDir": {}},
        {"name": "agent-tmp", "emptyDir": {}},
        _agent_token_volume(),
    ]
    volumes += _base_model_volumes(spec)
    volumes += _download_volumes(spec.downloads)
    for claim in spec.adapter_sources.pvcs:
        volumes.append({"name": f"src-{claim}"[:63], "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
    volumes += _per_user_volumes(owner, spec)

    init_containers = [_agent_container(owner, spec, defaults)]
    if spec.base_model.fetched:
        # Before the agent: a model that fails verification keeps the pod in Init, naming the cause.
        init_containers.insert(0, _fetch_model_container(spec, defaults))
    pod: dict[str, Any] = {
        "serviceAccountName": pod_service_account(owner, spec),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": spec.termination_grace_period_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,
            "runAsGroup": RUNTIME_UID,
            "fsGroup": RUNTIME_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # Not Ready until the agent says the adapters this pod must serve are loaded.
        "readinessGates": [{"conditionType": r.READINESS_GATE}],
        "initContainers": init_containers,
        "containers": [_runtime_container(owner, spec, defaults)],
        "volumes": volumes,
    }
    scheduling = spec.scheduling
    if scheduling.node_selector:
        pod["nodeSelector"] = dict(sorted(scheduling.node_selector.items()))
    if scheduling.tolerations:
        pod["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in scheduling.tolerations]
    if scheduling.priority_class_name:
        pod["priorityClassName"] = scheduling.priority_class_name
    if scheduling.affinity is not None:
        pod["affinity"] = scheduling.affinity.as_dict()
    if scheduling.topology_spread_constraints:
        pod["topologySpreadConstraints"] = [_spread(owner, c) for c in scheduling.topology_spread_constraints]
    if spec.pod.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": ref.name} for ref in spec.pod.image_pull_secrets]
    if spec.pod.runtime_class_name:
        pod["runtimeClassName"] = spec.pod.runtime_class_name
    return pod


def _spread(owner: Owner, constraint: TopologySpreadConstraint) -> dict[str, Any]:
    out = constraint.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)
    out["whenUnsatisfiable"] = constraint.when_unsatisfiable
    # Unset: spread this model's runtime pods, which is what a spread constraint on them means.
    out.setdefault("labelSelector", {"matchLabels": selector_labels(owner.name)})
    return out


def base_model_dir(spec: ModelSpec) -> str:
    """SAIGON_BASE_MODEL: the path in the image, the claim's subPath, or the fetched model's directory."""
    base = spec.base_model
    if base.path is not None:
        return base.path
    if base.fetched:
        return f"{r.BASE_MODEL_MOUNT}/{base.sha256}"
    return r.BASE_MODEL_MOUNT + (f"/{base.pvc.sub_path}" if base.pvc and base.pvc.sub_path else "")


def _base_model_volumes(spec: ModelSpec) -> list[dict[str, Any]]:
    base = spec.base_model
    if base.pvc is not None:
        return [{"name": "base-model", "persistentVolumeClaim": {"claimName": base.pvc.claim_name, "readOnly": True}}]
    if not base.fetched:
        return []
    cache = base.cache
    if cache.claim_name is not None:
        # Shared by every replica (ReadWriteMany): filled once, reused while <sha256>/ is there.
        return [{"name": "base-model", "persistentVolumeClaim": {"claimName": cache.claim_name}}]
    empty_dir: dict[str, Any] = {"sizeLimit": cache.size_limit}
    if cache.medium:
        empty_dir["medium"] = cache.medium
    return [{"name": "base-model", "emptyDir": empty_dir}]


def _download_volumes(downloads: DownloadOptions) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = []
    ca = downloads.ca_bundle
    if ca is not None:
        items = [{"key": ca.key, "path": "ca.crt"}]
        source: dict[str, Any] = (
            {"configMap": {"name": ca.config_map, "items": items}}
            if ca.config_map is not None
            else {"secret": {"secretName": ca.secret, "items": items}}
        )
        volumes.append({"name": "ca-bundle", **source})
    identity = downloads.web_identity
    if identity is not None:
        token = {"audience": identity.audience, "path": "token", "expirationSeconds": 3600}
        volumes.append({"name": "web-identity", "projected": {"sources": [{"serviceAccountToken": token}]}})
    return volumes


def _download_env(spec: ModelSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(env, mounts) shared by the agent and the base-model fetch: guard, CA, proxy, web identity."""
    downloads = spec.downloads
    env: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if spec.adapter_sources.allowed_cidrs:
        env.append({"name": AGENT_ENV.ALLOWED_CIDRS, "value": ",".join(spec.adapter_sources.allowed_cidrs)})
    if downloads.ca_bundle is not None:
        env.append({"name": AGENT_ENV.CA_BUNDLE, "value": f"{CA_BUNDLE_MOUNT}/ca.crt"})
        mounts.append({"name": "ca-bundle", "mountPath": CA_BUNDLE_MOUNT, "readOnly": True})
    if downloads.proxy is not None:
        env.append({"name": AGENT_ENV.HTTPS_PROXY, "value": downloads.proxy.url})
        if downloads.proxy.no_proxy:
            env.append({"name": AGENT_ENV.NO_PROXY, "value": ",".join(downloads.proxy.no_proxy)})
    identity = downloads.web_identity
    if identity is not None:
        env += [
            {"name": AGENT_ENV.AWS_ROLE_ARN, "value": identity.role_arn},
            {"name": AGENT_ENV.AWS_WEB_IDENTITY_TOKEN_FILE, "value": f"{WEB_IDENTITY_MOUNT}/token"},
            {"name": AGENT_ENV.AWS_ENDPOINT_URL_STS, "value": identity.sts_endpoint},
        ]
        mounts.append({"name": "web-identity", "mountPath": WEB_IDENTITY_MOUNT, "readOnly": True})
    return env, mounts


def _fetch_model_container(spec: ModelSpec, defaults: Defaults) -> dict[str, Any]:
    """`saigon-agent fetch-model`: fetches the base model into <cache>/<sha256>/ and verifies it."""
    base = spec.base_model
    source = base.fetch_source().as_dict()
    env: list[dict[str, Any]] = [
        {"name": FETCH_MODEL_ENV.SOURCE, "value": json.dumps(source, sort_keys=True, separators=(",", ":"))},
        {"name": FETCH_MODEL_ENV.SHA256, "value": base.sha256},
        {"name": FETCH_MODEL_ENV.CACHE_DIR, "value": r.BASE_MODEL_MOUNT},
        {"name": LOG_FORMAT_ENV, "value": defaults.log_format},
    ]
    if base.s3 is not None and base.s3.credentials_secret_ref is not None:
        secret = base.s3.credentials_secret_ref.name
        env += [
            _secret_env(FETCH_MODEL_ENV.AWS_ACCESS_KEY_ID, secret, "accessKeyId"),
            _secret_env(FETCH_MODEL_ENV.AWS_SECRET_ACCESS_KEY, secret, "secretAccessKey"),
            _secret_env(FETCH_MODEL_ENV.AWS_SESSION_TOKEN, secret, "sessionToken", optional=True),
        ]
    hf = base.hugging_face
    if hf is not None and hf.token_secret_ref is not None:
        env.append(_secret_env(FETCH_MODEL_ENV.HF_TOKEN, hf.token_secret_ref.name, hf.token_secret_ref.key))
    download_env, download_mounts = _download_env(spec)
    return {
        **_agent_image_container(spec, defaults, FETCH_MODEL_CONTAINER, "fetch-model", cpu="100m", memory="128Mi"),
        "env": env + download_env,
        "volumeMounts": [
            {"name": "base-model", "mountPath": r.BASE_MODEL_MOUNT},
            {"name": "agent-tmp", "mountPath": "/tmp"},
            *download_mounts,
        ],
        "securityContext": _HARDENED,
        # `kubectl describe pod` shows the cause (digest mismatch, 403, ...) as the container's message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _empty_dir(spec: ModelSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"sizeLimit": spec.adapter_storage.size_limit}
    if spec.adapter_storage.medium:
        out["medium"] = spec.adapter_storage.medium
    return out


def _agent_token_volume() -> dict[str, Any]:
    return {
        "name": "agent-api-token",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ]
        },
    }


_HARDENED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def _secret_env(name: str, secret: str, key: str, *, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _per_user_volumes(owner: Owner, spec: ModelSpec) -> list[dict[str, Any]]:
    """The runtime's own volumes for per-user data, credentials and the audit log (never the
    agent's adapters volume, which the runtime only reads)."""
    names = names_for(owner.name)
    volumes: list[dict[str, Any]] = []
    if spec.auth.inference == "Required":
        # A whole-Secret volume (no subPath): the kubelet swaps its files when the Secret changes.
        secret = {"secretName": names["inference_tokens"], "defaultMode": 0o440}
        volumes.append({"name": "inference-tokens", "secret": secret})
    files = spec.user_store.files
    if spec.user_store.postgres is None:
        source: dict[str, Any] = (
            {"persistentVolumeClaim": {"claimName": files.claim_name}}
            if files is not None and files.claim_name
            else {"emptyDir": {}}
        )
        volumes.append({"name": "user-data", **source})
    if spec.audit.destination == "Volume":
        volumes.append({"name": "audit-log", "persistentVolumeClaim": {"claimName": spec.audit.claim_name}})
    return volumes


def _per_user_env(owner: Owner, spec: ModelSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(env, volume mounts) of the runtime for the user store, mesh defaults, audit and auth."""
    names = names_for(owner.name)
    env: list[dict[str, Any]] = [
        {"name": RUNTIME_ENV["mesh_default"], "value": "true" if spec.mesh.openai_default else "false"},
        {"name": RUNTIME_ENV["mesh_max_tokens"], "value": str(spec.mesh.max_context_tokens)},
        _secret_env(RUNTIME_ENV["audit_salt"], names["audit_salt"], SALT_KEY),
    ]
    mounts: list[dict[str, Any]] = []
    if spec.auth.inference == "Required":
        env.append({"name": RUNTIME_ENV["inference_tokens_file"], "value": f"{TOKENS_MOUNT}/{TOKENS_KEY}"})
        mounts.append({"name": "inference-tokens", "mountPath": TOKENS_MOUNT, "readOnly": True})
    postgres = spec.user_store.postgres
    if postgres is not None:
        env.append({"name": RUNTIME_ENV["user_store"], "value": "postgres"})
        env.append(
            _secret_env(RUNTIME_ENV["user_store_dsn"], postgres.dsn_secret_ref.name, postgres.dsn_secret_ref.key)
        )
    else:
        env.append({"name": RUNTIME_ENV["user_store"], "value": "files"})
        env.append({"name": RUNTIME_ENV["mesh_dir"], "value": f"{USER_DATA_MOUNT}/mesh"})
        mounts.append({"name": "user-data", "mountPath": USER_DATA_MOUNT})
    if spec.audit.destination == "Volume":
        env.append({"name": RUNTIME_ENV["log_dir"], "value": AUDIT_MOUNT})
        mounts.append({"name": "audit-log", "mountPath": AUDIT_MOUNT})
    else:
        env.append({"name": RUNTIME_ENV["audit_dest"], "value": "stdout"})
    if spec.audit.log_prompts:
        env.append({"name": RUNTIME_ENV["log_prompts"], "value": "true"})
    if spec.audit.raw_user_ids:
        env.append({"name": RUNTIME_ENV["audit_raw_user_ids"], "value": "true"})
    return env, mounts


def runtime_device(spec: ModelSpec) -> str:
    """A pod given GPUs serves on CUDA: with `auto` a GPU that fails to load would not be noticed
    as early; the runtime then stays not Ready with the reason instead of serving from the CPU."""
    return "cuda" if spec.device == "auto" and spec.gpus > 0 else spec.device


def _runtime_container(owner: Owner, spec: ModelSpec, defaults: Defaults) -> dict[str, Any]:
    tokens = spec.token_secret_ref
    env = [
        {"name": RUNTIME_ENV["base_model"], "value": base_model_dir(spec)},
        {"name": RUNTIME_ENV["adapters_dir"], "value": r.ADAPTERS_MOUNT},
        {"name": RUNTIME_ENV["device"], "value": runtime_device(spec)},
        {"name": RUNTIME_ENV["max_cpu_loras"], "value": str(spec.cache.max_cpu_loras)},
        {"name": RUNTIME_ENV["max_rank"], "value": str(spec.cache.max_rank)},
        {"name": RUNTIME_ENV["host"], "value": "0.0.0.0"},
        {"name": RUNTIME_ENV["port"], "value": str(spec.port)},
        _secret_env(RUNTIME_ENV["admin_token"], tokens.name, tokens.admin_token_key),
        _secret_env(RUNTIME_ENV["inference_tokens"], tokens.name, tokens.inference_tokens_key, optional=True),
        {"name": "HOME", "value": "/tmp"},
        # The adapters volume is the agent's; /tmp (an emptyDir) outlives container restarts.
        {"name": RUNTIME_ENV["hotset_file"], "value": "/tmp/saigon-hotset.json"},
        # The agent loads every adapter through the admin API; the runtime's own directory scan
        # (for a runtime without an agent) re-read every adapter's `active` link every 2 s, a
        # share of the pod's CPU that grew with the adapters placed on it.
        {"name": RUNTIME_ENV["watch_interval_s"], "value": "0"},
        {"name": LOG_FORMAT_ENV, "value": defaults.log_format},
    ]
    if spec.cache.max_loras is not None:  # else the runtime sizes its device tier from memory
        env.append({"name": RUNTIME_ENV["max_loras"], "value": str(spec.cache.max_loras)})
    if spec.gie_metrics:
        env.append({"name": RUNTIME_ENV["gie_metrics"], "value": "true"})
    env += _runtime_settings_env(spec)
    pre_stop_s, drain_s = stop_budget(spec.termination_grace_period_seconds)
    env.append({"name": RUNTIME_ENV["drain_timeout"], "value": str(drain_s)})
    if spec.placed_replicas():
        # A user the router sends here while their adapter's pods are down: the agent loads it on demand.
        env.append({"name": RUNTIME_ENV["demand_url"], "value": f"http://127.0.0.1:{r.AGENT_HEALTH_PORT}"})
    per_user_env, per_user_mounts = _per_user_env(owner, spec)
    env += per_user_env
    mounts = [
        {"name": "adapters", "mountPath": r.ADAPTERS_MOUNT, "readOnly": True},
        {"name": "runtime-tmp", "mountPath": "/tmp"},
        *per_user_mounts,
    ]
    if spec.base_model.pvc is not None or spec.base_model.fetched:
        mounts.append({"name": "base-model", "mountPath": r.BASE_MODEL_MOUNT, "readOnly": True})
    container: dict[str, Any] = {
        "name": RUNTIME_CONTAINER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["saigon-runtime", "serve"],
        "env": env,
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        "resources": _runtime_resources(spec),
        "volumeMounts": mounts,
        "securityContext": _HARDENED,
        # Loading a base model can take minutes; liveness starts counting only after this.
        "startupProbe": _probe("/healthz", "http", period=5, failures=120),
        "readinessProbe": _probe("/readyz", "http", period=5, failures=2),
        "livenessProbe": _probe("/healthz", "http", period=10, failures=3),
    }
    if pre_stop_s > 0:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": pre_stop_s}}}
    return container


def _runtime_settings_env(spec: ModelSpec) -> list[dict[str, Any]]:
    """spec.runtime as SAIGON_* variables; unset settings keep the runtime's defaults."""
    settings = spec.runtime
    values: dict[str, object | None] = {
        "dtype": None if settings.dtype == "auto" else settings.dtype,
        "max_batch_size": settings.max_batch_size,
        "max_queue": settings.max_queue,
        "max_new_tokens": settings.max_new_tokens,
        "memory_utilization": settings.memory_utilization,
    }
    return [{"name": RUNTIME_ENV[key], "value": str(value)} for key, value in values.items() if value is not None]


def stop_budget(grace_s: int) -> tuple[int, int]:
    """(preStop sleep, drain timeout) within the pod's termination grace period: the sleep covers
    endpoint propagation, the drain lets in-flight requests finish, a margin is left for cleanup.
    A short grace period shortens all three: the sleep to half of it, the margin to a quarter."""
    pre_stop = min(PRESTOP_SLEEP_S, grace_s // 2)
    margin = min(STOP_MARGIN_S, grace_s // 4)
    return pre_stop, max(1, grace_s - pre_stop - margin)


def _agent_container(owner: Owner, spec: ModelSpec, defaults: Defaults) -> dict[str, Any]:
    tokens = spec.token_secret_ref
    env = [
        _field_env(AGENT_ENV.NAMESPACE, "metadata.namespace"),
        _field_env(AGENT_ENV.POD_NAME, "metadata.name"),
        {"name": AGENT_ENV.MODEL, "value": owner.name},
        {"name": AGENT_ENV.ADAPTERS_DIR, "value": r.ADAPTERS_MOUNT},
        {"name": AGENT_ENV.RUNTIME_URL, "value": f"http://127.0.0.1:{spec.port}"},
        _secret_env(AGENT_ENV.ADMIN_TOKEN, tokens.name, tokens.admin_token_key),
        {"name": AGENT_ENV.SOURCES_ROOT, "value": r.SOURCES_MOUNT},
        {"name": AGENT_ENV.HEALTH_PORT, "value": str(r.AGENT_HEALTH_PORT)},
        {"name": LOG_FORMAT_ENV, "value": defaults.log_format},
    ]
    download_env, download_mounts = _download_env(spec)
    env += download_env
    if spec.agent.metrics_adapter_labels:
        env.append({"name": AGENT_ENV.METRICS_ADAPTER_LABELS, "value": "true"})
    mounts = [
        {"name": "adapters", "mountPath": r.ADAPTERS_MOUNT},
        {"name": "agent-tmp", "mountPath": "/tmp"},
        {"name": "agent-api-token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True},
        *download_mounts,
    ]
    for claim in spec.adapter_sources.pvcs:
        mounts.append({"name": f"src-{claim}"[:63], "mountPath": f"{r.SOURCES_MOUNT}/{claim}", "readOnly": True})
    return {
        **_agent_image_container(spec, defaults, AGENT_CONTAINER, "run", cpu="50m", memory="64Mi"),
        # A native sidecar: starts before the runtime, runs for the pod's whole life.
        "restartPolicy": "Always",
        "env": env,
        "ports": [{"name": "agent-health", "containerPort": r.AGENT_HEALTH_PORT, "protocol": "TCP"}],
        "volumeMounts": mounts,
        "securityContext": _HARDENED,
        "startupProbe": _probe("/healthz", "agent-health", period=1, failures=30),
        "livenessProbe": _probe("/healthz", "agent-health", period=10, failures=3),
    }


def _agent_image_container(
    spec: ModelSpec, defaults: Defaults, name: str, subcommand: str, *, cpu: str, memory: str
) -> dict[str, Any]:
    """A container of the agent image running `saigon-agent <subcommand>`, with spec.agent's resources
    (else a small request and a 512Mi memory limit)."""
    return {
        "name": name,
        "image": spec.agent.image or defaults.agent_image,
        "imagePullPolicy": defaults.agent_image_pull_policy,
        "command": ["saigon-agent", subcommand],
        "resources": _resources(spec.agent.resources)
        or {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": "512Mi"}},
    }


def _probe(path: str, port: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 3,
    }


def _resources(res: Resources) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if res.requests:
        out["requests"] = dict(sorted(res.requests.items()))
    if res.limits:
        out["limits"] = dict(sorted(res.limits.items()))
    return out


def _runtime_resources(spec: ModelSpec) -> dict[str, Any]:
    out = _resources(spec.resources)
    if spec.gpus:
        # Extended resources are limits (a request, if any, must equal it).
        out.setdefault("limits", {})[spec.gpu_resource_name] = spec.gpus
    return out
