"""Pod knobs, fetched base models and download credentials in the pods a SaigonModel builds (issue 17)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from saigon_contract import resources as r
from saigon_contract.agent_env import ENV as AGENT_ENV
from saigon_contract.agent_env import FETCH_MODEL_ENV
from saigon_contract.specs import AdapterSource, SpecError, parse_model_spec
from saigon_operator.builders.model import (
    RUNTIME_ENV,
    Defaults,
    Owner,
    build_children,
    build_deployment,
    selector_labels,
)

OWNER = Owner(name="llama", namespace="ml", uid="1234")
DEFAULTS = Defaults(agent_image="saigon/operator:1")
SHA = "a" * 64


def raw_spec(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "baseModel": {"path": "/models/llama"},
        "image": "saigon/runtime:1",
        "tokenSecretRef": {"name": "tokens"},
        "replicas": 2,
    }
    raw.update(overrides)
    return raw


def template(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = build_deployment(OWNER, parse_model_spec(raw_spec(**overrides)), DEFAULTS)["spec"]["template"]
    return out


def containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in [*pod.get("initContainers", []), *pod["containers"]]}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def mounts_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in container["volumeMounts"]}


def volumes_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["volumes"]}


def test_pod_metadata_identity_and_placement_reach_the_pod() -> None:
    affinity = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "kubernetes.io/hostname"}]
        }
    }
    tpl = template(
        pod={
            "annotations": {"team": "ml"},
            "labels": {"cost-center": "42"},
            "imagePullSecrets": [{"name": "regcred"}],
            "serviceAccountName": "llama-irsa",
            "runtimeClassName": "nvidia",
        },
        scheduling={
            "affinity": affinity,
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone"},
                {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
                 "labelSelector": {"matchLabels": {"tier": "gpu"}}},
            ],
        },
    )  # fmt: skip
    meta, pod = tpl["metadata"], tpl["spec"]
    assert meta["labels"]["cost-center"] == "42"
    assert selector_labels("llama").items() <= meta["labels"].items()
    assert meta["annotations"]["team"] == "ml" and r.SPEC_HASH_ANNOTATION in meta["annotations"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["serviceAccountName"] == "llama-irsa"
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["affinity"] == affinity
    # Without a labelSelector a constraint spreads this model's runtime pods.
    assert pod["topologySpreadConstraints"] == [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
         "labelSelector": {"matchLabels": selector_labels("llama")}},
        {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": {"tier": "gpu"}}},
    ]  # fmt: skip
    # The user's token stays out of the runtime container: only the agent mounts a projected one.
    assert pod["automountServiceAccountToken"] is False
    # Annotations are part of the pod template: changing them rolls the pods.
    other = template(pod={"annotations": {"team": "search"}})["metadata"]["annotations"]
    assert other[r.SPEC_HASH_ANNOTATION] != meta["annotations"][r.SPEC_HASH_ANNOTATION]


def test_the_agent_role_is_bound_to_the_users_service_account_and_nothing_more() -> None:
    spec = parse_model_spec(raw_spec(pod={"serviceAccountName": "llama-irsa"}))
    children = {(c["kind"], c["metadata"]["name"]): c for c in build_children(OWNER, spec, DEFAULTS)}
    binding = children[("RoleBinding", "llama-agent")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "llama-irsa", "namespace": "ml"}]
    assert binding["roleRef"]["name"] == "llama-agent"
    default = {
        (c["kind"], c["metadata"]["name"]): c for c in build_children(OWNER, parse_model_spec(raw_spec()), DEFAULTS)
    }
    assert default[("RoleBinding", "llama-agent")]["subjects"][0]["name"] == "llama-agent"


def test_runtime_settings_become_the_runtimes_variables_and_unset_ones_stay_out() -> None:
    settings = {"dtype": "bfloat16", "maxBatchSize": 64, "maxQueue": 512, "maxNewTokens": 1024,
                "memoryUtilization": 0.8}  # fmt: skip
    env = env_of(containers(template(runtime=settings)["spec"])["runtime"])
    assert (
        env[RUNTIME_ENV["dtype"]],
        env[RUNTIME_ENV["max_batch_size"]],
        env[RUNTIME_ENV["max_queue"]],
        env[RUNTIME_ENV["max_new_tokens"]],
        env[RUNTIME_ENV["memory_utilization"]],
    ) == ("bfloat16", "64", "512", "1024", "0.8")
    plain = env_of(containers(template()["spec"])["runtime"])
    assert not {RUNTIME_ENV[k] for k in ("dtype", "max_batch_size", "max_queue", "max_new_tokens")} & set(plain)


def test_gpus_go_into_the_runtime_limits_under_the_configured_resource_name() -> None:
    runtime = containers(template(gpus=2, resources={"limits": {"memory": "40Gi"}})["spec"])["runtime"]
    assert runtime["resources"]["limits"] == {"memory": "40Gi", "nvidia.com/gpu": 2}
    amd = containers(template(gpus=1, gpuResourceName="amd.com/gpu")["spec"])["runtime"]
    assert amd["resources"]["limits"] == {"amd.com/gpu": 1}
    agent = containers(template(gpus=1, agent={"resources": {"limits": {"memory": "256Mi"}}})["spec"])["agent"]
    assert agent["resources"] == {"limits": {"memory": "256Mi"}}


def test_a_fetched_model_lands_in_an_emptydir_before_the_agent_and_the_runtime_start() -> None:
    base = {"https": {"url": "https://models.example.org/llama.tar.gz"}, "sha256": SHA, "cache": {"sizeLimit": "40Gi"}}
    pod = template(baseModel=base, adapterSources={"allowedCidrs": ["10.0.0.0/8"]})["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["fetch-model", "agent"]
    fetch = pod["initContainers"][0]
    assert fetch["command"] == ["saigon-agent", "fetch-model"]
    assert fetch["image"] == DEFAULTS.agent_image
    assert fetch["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "restartPolicy" not in fetch  # a plain init container: the pod waits for it
    env = env_of(fetch)
    assert AdapterSource.model_validate_json(env[FETCH_MODEL_ENV.SOURCE]).https is not None
    assert env[FETCH_MODEL_ENV.SHA256] == SHA
    assert env[FETCH_MODEL_ENV.CACHE_DIR] == r.BASE_MODEL_MOUNT
    assert env[AGENT_ENV.ALLOWED_CIDRS] == "10.0.0.0/8"  # the same guard as the agent's
    assert volumes_of(pod)["base-model"] == {"name": "base-model", "emptyDir": {"sizeLimit": "40Gi"}}
    assert mounts_of(fetch)["base-model"].get("readOnly") is not True
    assert "agent-api-token" not in mounts_of(fetch)  # no Kubernetes API access
    runtime = containers(pod)["runtime"]
    assert mounts_of(runtime)["base-model"]["readOnly"] is True
    assert env_of(runtime)[RUNTIME_ENV["base_model"]] == f"{r.BASE_MODEL_MOUNT}/{SHA}"


def test_a_shared_claim_caches_the_model_for_every_replica() -> None:
    base = {"https": {"url": "https://models.example.org/llama.tar"}, "sha256": SHA, "cache": {"claimName": "models"}}
    pod = template(baseModel=base)["spec"]
    assert volumes_of(pod)["base-model"] == {"name": "base-model", "persistentVolumeClaim": {"claimName": "models"}}


def test_s3_keys_and_a_hugging_face_token_reach_only_the_fetch_container() -> None:
    s3 = {"endpoint": "https://s3.eu-west-1.amazonaws.com", "bucket": "models", "key": "llama.tar",
          "credentialsSecretRef": {"name": "s3-keys"}}  # fmt: skip
    pod = template(baseModel={"s3": s3, "sha256": SHA})["spec"]
    env = env_of(containers(pod)["fetch-model"])
    assert env[FETCH_MODEL_ENV.AWS_ACCESS_KEY_ID] == {"secretKeyRef": {"name": "s3-keys", "key": "accessKeyId"}}
    assert env[FETCH_MODEL_ENV.AWS_SECRET_ACCESS_KEY] == {"secretKeyRef": {"name": "s3-keys", "key": "secretAccessKey"}}
    assert env[FETCH_MODEL_ENV.AWS_SESSION_TOKEN]["secretKeyRef"]["optional"] is True
    hf = {"repo": "org/llama", "revision": "b" * 40, "tokenSecretRef": {"name": "hf"}}
    pod = template(baseModel={"huggingFace": hf, "sha256": SHA})["spec"]
    fetch, agent, runtime = (containers(pod)[n] for n in ("fetch-model", "agent", "runtime"))
    assert env_of(fetch)[FETCH_MODEL_ENV.HF_TOKEN] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    source = json.loads(env_of(fetch)[FETCH_MODEL_ENV.SOURCE])
    assert source == {"huggingFace": {"repo": "org/llama", "revision": "b" * 40, "endpoint": "https://huggingface.co"}}
    assert FETCH_MODEL_ENV.HF_TOKEN not in env_of(agent) and FETCH_MODEL_ENV.HF_TOKEN not in env_of(runtime)


def test_downloads_give_the_agent_and_the_fetch_a_ca_a_proxy_and_a_web_identity() -> None:
    downloads = {
        "webIdentity": {"roleArn": "arn:aws:iam::123456789012:role/saigon", "stsEndpoint": "https://sts.eu-west-1.amazonaws.com"},
        "caBundle": {"secret": "minio-ca", "key": "ca.pem"},
        "proxy": {"url": "http://proxy.egress:3128", "noProxy": ["minio.storage.svc", "10.0.0.5"]},
    }  # fmt: skip
    base = {"s3": {"endpoint": "https://minio.storage.svc", "bucket": "m", "key": "llama.tar"}, "sha256": SHA}
    pod = template(baseModel=base, downloads=downloads)["spec"]
    volumes = volumes_of(pod)
    assert volumes["ca-bundle"]["secret"] == {"secretName": "minio-ca", "items": [{"key": "ca.pem", "path": "ca.crt"}]}
    (token,) = volumes["web-identity"]["projected"]["sources"]
    assert token["serviceAccountToken"]["audience"] == "sts.amazonaws.com"
    for name in ("fetch-model", "agent"):
        container = containers(pod)[name]
        env = env_of(container)
        assert env[AGENT_ENV.CA_BUNDLE] == f"{mounts_of(container)['ca-bundle']['mountPath']}/ca.crt"
        assert env[AGENT_ENV.HTTPS_PROXY] == "http://proxy.egress:3128"
        assert env[AGENT_ENV.NO_PROXY] == "minio.storage.svc,10.0.0.5"
        assert env[AGENT_ENV.AWS_ROLE_ARN] == "arn:aws:iam::123456789012:role/saigon"
        assert env[AGENT_ENV.AWS_ENDPOINT_URL_STS] == "https://sts.eu-west-1.amazonaws.com"
        assert env[AGENT_ENV.AWS_WEB_IDENTITY_TOKEN_FILE].startswith(mounts_of(container)["web-identity"]["mountPath"])
    runtime = containers(pod)["runtime"]
    assert "web-identity" not in mounts_of(runtime) and AGENT_ENV.AWS_ROLE_ARN not in env_of(runtime)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"pod": {"labels": {"app.kubernetes.io/managed-by": "me"}}}, "are the operator's labels"),
        ({"pod": {"annotations": {"saigon.ai/adapters": "{}"}}}, "prefix is the operator's"),
        ({"rollout": {"maxSurge": "0%", "maxUnavailable": 0}}, "cannot both be 0"),
        ({"baseModel": {"path": "/m", "cache": {"claimName": "c"}}}, "applies to https, s3 and huggingFace"),
        ({"baseModel": {"huggingFace": {"repo": "org/m", "revision": "c" * 40}}}, "sha256 is required"),
        ({"downloads": {"proxy": {"url": "socks5://p:1080"}}}, "downloads.proxy.url"),
        ({"downloads": {"caBundle": {}}}, "exactly one of configMap or secret"),
        ({"gpuResourceName": "nvidia.com/gpu count"}, "gpuResourceName"),
    ],
)
def test_invalid_knobs_are_refused_by_the_spec_model_too(overrides: dict[str, Any], fragment: str) -> None:
    """Defence in depth: the installed CRD may be older than the operator."""
    with pytest.raises(SpecError, match=fragment):
        parse_model_spec(raw_spec(**overrides))
