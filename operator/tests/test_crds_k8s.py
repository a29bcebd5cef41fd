"""The CRDs in crds/ against a real kube-apiserver: structural schemas, defaults, CEL rules, printer columns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controlplane.cluster import Cluster, CommandError
from controlplane.waiting import eventually

CRDS = Path(__file__).resolve().parents[2] / "crds"
SHA = "c" * 64


@pytest.fixture(scope="module")
def crds(k8s_cluster: Cluster) -> Iterator[Cluster]:
    k8s_cluster.kubectl("apply", "--server-side", "-f", str(CRDS))
    for name in ("saigonmodels.saigon.ai", "saigonadapters.saigon.ai"):
        k8s_cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    yield k8s_cluster


def apply(cluster: Cluster, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    out = cluster.kubectl("apply", "-n", namespace, "-o", "json", "-f", "-", input=json.dumps(obj))
    result: dict[str, Any] = json.loads(out)
    return result


def rejected(cluster: Cluster, namespace: str, obj: dict[str, Any]) -> str:
    with pytest.raises(CommandError) as info:
        apply(cluster, namespace, obj)
    return info.value.stderr


def adapter(name: str = "a1", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "modelRef": {"name": "llama"},
        "scope": {"user": "42"},
        "version": "v1",
        "sha256": SHA,
        "source": {"https": {"url": "https://adapters.example.com/u42/v1.tar"}},
    }
    body.update(spec)
    return {
        "apiVersion": "saigon.ai/v1alpha1",
        "kind": "SaigonAdapter",
        "metadata": {"name": name},
        "spec": {k: v for k, v in body.items() if v is not None},
    }


def model(name: str = "llama", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "baseModel": {"path": "/models/llama"},
        "image": "saigon/runtime:1",
        "tokenSecretRef": {"name": "tokens"},
    }
    body.update(spec)
    return {"apiVersion": "saigon.ai/v1alpha1", "kind": "SaigonModel", "metadata": {"name": name}, "spec": body}


def test_defaults_are_applied(crds: Cluster, k8s_namespace: str) -> None:
    stored = apply(crds, k8s_namespace, model())
    spec = stored["spec"]
    assert (spec["replicas"], spec["port"], spec["device"], spec["imagePullPolicy"]) == (
        1,
        8001,
        "auto",
        "IfNotPresent",
    )
    assert spec["cache"] == {"maxCpuLoras": 64, "maxRank": 64}  # maxLoras unset: sized from memory
    assert spec["tokenSecretRef"]["adminTokenKey"] == "admin-token"
    stored = apply(crds, k8s_namespace, adapter())
    assert stored["spec"]["promotion"] == {"strategy": "Immediate"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"source": {"https": {"url": "https://a.example/x"}, "pvc": {"claimName": "c", "path": "x"}}},
            "exactly one of https, s3, pvc or huggingFace",
        ),
        ({"source": {}}, "exactly one of https, s3, pvc or huggingFace"),
        ({"sha256": None}, "sha256 is required for remote sources"),
        ({"scope": {"user": "42", "global": True}}, "scope needs exactly one of user, domain or global"),
        ({"scope": {}}, "scope needs exactly one of user, domain or global"),
        ({"scope": {"user": "a..b"}}, "must not contain '..'"),
        ({"version": "active"}, "is reserved"),
        ({"version": "../v1"}, "spec.version"),
        ({"sha256": "ABC"}, "spec.sha256"),
        ({"source": {"https": {"url": "http://a.example/x"}}}, "spec.source.https.url"),
        (
            {"source": {"pvc": {"claimName": "c", "path": "../../etc/shadow"}}, "sha256": None},
            "must be relative to the claim",
        ),
        ({"source": {"huggingFace": {"repo": "org/lora", "revision": "main"}}}, "spec.source.huggingFace.revision"),
        ({"promotion": {"strategy": "YOLO"}}, "spec.promotion.strategy"),
        ({"promotion": {"strategy": "Canary", "canary": {"replicas": "150%"}}}, "spec.promotion.canary.replicas"),
        ({"promotion": {"strategy": "Canary", "canary": {"replicas": 0}}}, "spec.promotion.canary.replicas"),
        ({"promotion": {"gates": {"maxErrorRate": 1.5}}}, "spec.promotion.gates.maxErrorRate"),
        ({"promotion": {"gates": {"evaluation": [{"prompt": "hi"}]}}}, "needs expect, or completion with maxLoss"),
        ({"promotion": {"gates": {"evaluation": [{"prompt": "hi", "maxLoss": 1}]}}}, "completion and maxLoss go"),
    ],
)
def test_bad_adapters_are_rejected_at_admission(
    crds: Cluster, k8s_namespace: str, spec: dict[str, Any], message: str
) -> None:
    assert message in rejected(crds, k8s_namespace, adapter(**spec))


def test_promotion_policies_are_accepted(crds: Cluster, k8s_namespace: str) -> None:
    promotion = {
        "strategy": "Canary",
        "canary": {"replicas": "25%", "analysisSeconds": 30},
        "gates": {
            "maxErrorRate": 0.01,
            "maxP99LatencyMs": 500,
            "evaluation": [{"prompt": "2+2=", "expect": "4"}, {"prompt": "2+2=", "completion": " 4", "maxLoss": 2.5}],
        },
        "historyLimit": 5,
    }
    stored = apply(crds, k8s_namespace, adapter(promotion=promotion))
    assert stored["spec"]["promotion"] == promotion
    stored = apply(crds, k8s_namespace, adapter(promotion={"strategy": "Manual", "canary": {"replicas": 2}}))
    assert stored["spec"]["promotion"]["canary"] == {"replicas": 2}


def test_pvc_sources_need_no_digest(crds: Cluster, k8s_namespace: str) -> None:
    apply(crds, k8s_namespace, adapter(sha256=None, source={"pvc": {"claimName": "team", "path": "a/v1.tar"}}))


def test_versions_model_and_scope_are_immutable(crds: Cluster, k8s_namespace: str) -> None:
    apply(crds, k8s_namespace, adapter())
    assert "a version is immutable" in rejected(crds, k8s_namespace, adapter(sha256="d" * 64))
    assert "modelRef is immutable" in rejected(crds, k8s_namespace, adapter(modelRef={"name": "other"}))
    assert "scope is immutable" in rejected(crds, k8s_namespace, adapter(scope={"user": "43"}))
    # A new version may carry a new digest.
    stored = apply(crds, k8s_namespace, adapter(version="v2", sha256="d" * 64))
    assert stored["spec"]["version"] == "v2"


def test_bad_models_are_rejected(crds: Cluster, k8s_namespace: str) -> None:
    assert "exactly one of pvc, path, https, s3 or huggingFace" in rejected(
        crds, k8s_namespace, model(baseModel={"path": "/m", "pvc": {"claimName": "w"}})
    )
    assert "spec.replicas" in rejected(crds, k8s_namespace, model(replicas=-1))
    assert "spec.device" in rejected(crds, k8s_namespace, model(device="tpu"))


def test_short_names_categories_and_printer_columns(crds: Cluster, k8s_namespace: str) -> None:
    apply(crds, k8s_namespace, model())
    apply(crds, k8s_namespace, adapter())
    header = crds.kubectl("get", "sga", "-n", k8s_namespace).splitlines()[0].split()
    columns = ["NAME", "MODEL", "ADAPTER", "VERSION", "SERVING", "READY", "PHASE", "PROMOTION", "PROGRESS", "AGE"]
    assert header == columns
    assert crds.kubectl("get", "sgm", "-n", k8s_namespace).splitlines()[0].split() == [
        "NAME",
        "READY",
        "REPLICAS",
        "READY-REPLICAS",
        "ADAPTERS",
        "AGE",
    ]
    names = crds.kubectl("get", "saigon", "-n", k8s_namespace, "-o", "name").split()
    assert sorted(names) == ["saigonadapter.saigon.ai/a1", "saigonmodel.saigon.ai/llama"]


def test_agents_can_select_adapters_by_model(crds: Cluster, k8s_namespace: str) -> None:
    apply(crds, k8s_namespace, adapter("a1"))
    apply(crds, k8s_namespace, adapter("a2", modelRef={"name": "other"}))
    out = crds.kubectl("get", "sga", "-n", k8s_namespace, "--field-selector", "spec.modelRef.name=other", "-o", "name")
    assert out.split() == ["saigonadapter.saigon.ai/a2"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"userStore": {"files": {}, "postgres": {"dsnSecretRef": {"name": "pg"}}}}, "one of files or postgres"),
        ({"audit": {"destination": "Volume"}}, "needs audit.claimName"),
        ({"auth": {"users": ["a..b"]}}, "must not contain '..'"),
        ({"auth": {"users": ["../x"]}}, "spec.auth.users"),
        ({"auth": {"inference": "Sometimes"}}, "spec.auth.inference"),
    ],
)
def test_bad_per_user_settings_are_rejected_at_admission(
    crds: Cluster, k8s_namespace: str, spec: dict[str, Any], message: str
) -> None:
    assert message in rejected(crds, k8s_namespace, model(**spec))


def test_per_user_defaults_are_applied(crds: Cluster, k8s_namespace: str) -> None:
    stored = apply(crds, k8s_namespace, model(name="peruser", auth={}, mesh={}, audit={}))["spec"]
    assert stored["auth"] == {"inference": "Required"}
    assert stored["mesh"] == {"openaiDefault": False, "maxContextTokens": 256}
    assert stored["audit"] == {"destination": "Stdout", "logPrompts": False, "rawUserIds": False}


def _undescribed(schema: dict[str, Any], path: str = "") -> tuple[int, list[str]]:
    """Fields under `schema` and those without a description, as `kubectl explain` reads them."""
    fields, missing = 0, []
    children = [(f"{path}.{k}".lstrip("."), v) for k, v in (schema.get("properties") or {}).items()]
    for field_path, sub in children:
        fields += 1
        if not (sub.get("description") or "").strip():
            missing.append(field_path)
    nested = [*children]
    if isinstance(schema.get("items"), dict):
        nested.append((f"{path}[]", schema["items"]))
    if isinstance(schema.get("additionalProperties"), dict):
        nested.append((f"{path}{{}}", schema["additionalProperties"]))
    for field_path, sub in nested:
        count, lost = _undescribed(sub, field_path)
        fields, missing = fields + count, missing + lost
    return fields, missing


@pytest.mark.parametrize("kind", ["SaigonModel", "SaigonAdapter"])
def test_kubectl_explain_describes_every_field(crds: Cluster, kind: str) -> None:
    """The schema the API server publishes (what `kubectl explain` shows): 100% of fields described."""
    published = eventually(
        lambda: json.loads(crds.kubectl("get", "--raw", "/openapi/v3/apis/saigon.ai/v1alpha1")),
        60,
        what="the API server publishes the CRDs' OpenAPI v3",
    )
    schema = published["components"]["schemas"][f"ai.saigon.v1alpha1.{kind}"]
    fields, missing = _undescribed(schema)
    print(f"\n[explain] {kind}: {fields - len(missing)}/{fields} fields described")
    assert fields > 80
    assert missing == []
    explained = crds.kubectl(
        "explain", f"{kind.lower()}s.spec.version" if kind == "SaigonAdapter" else "saigonmodels.spec.cache.maxRank"
    )
    assert "DESCRIPTION:" in explained and "<empty>" not in explained


# --- Pod knobs, base-model delivery and download credentials (issue 17 items 4 and 5) ----------


def test_pod_knobs_are_stored_and_defaulted(crds: Cluster, k8s_namespace: str) -> None:
    knobs = {
        "pod": {
            "annotations": {"team": "ml"},
            "labels": {"cost-center": "42"},
            "imagePullSecrets": [{"name": "regcred"}],
            "serviceAccountName": "llama-irsa",
            "runtimeClassName": "nvidia",
        },
        "scheduling": {
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 50, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}
                    ]
                },
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]}]}
                        ]
                    }
                },
            },
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone"}],
        },
        "runtime": {
            "dtype": "bfloat16",
            "maxBatchSize": 64,
            "maxQueue": 512,
            "maxNewTokens": 1024,
            "memoryUtilization": 0.85,
        },
        "rollout": {"maxSurge": "25%", "maxUnavailable": 0},
        "gpus": 2,
        "gpuResourceName": "amd.com/gpu",
    }
    stored = apply(crds, k8s_namespace, model(name="knobs", **knobs))["spec"]
    assert stored["pod"] == knobs["pod"]
    assert stored["runtime"] == knobs["runtime"]
    assert stored["scheduling"]["topologySpreadConstraints"] == [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}
    ]
    assert stored["scheduling"]["affinity"] == knobs["scheduling"]["affinity"]  # type: ignore[index]
    assert apply(crds, k8s_namespace, model(name="plain"))["spec"]["gpuResourceName"] == "nvidia.com/gpu"


def test_fetched_base_models_and_downloads_are_accepted(crds: Cluster, k8s_namespace: str) -> None:
    fetched = {
        "huggingFace": {"repo": "org/llama", "revision": "a" * 40, "tokenSecretRef": {"name": "hf"}},
        "sha256": SHA,
        "cache": {"claimName": "models-rwx"},
    }
    downloads = {
        "webIdentity": {"roleArn": "arn:aws:iam::123456789012:role/saigon"},
        "caBundle": {"configMap": "minio-ca"},
        "proxy": {"url": "http://proxy.egress:3128", "noProxy": ["minio.storage.svc"]},
    }
    stored = apply(crds, k8s_namespace, model(name="fetched", baseModel=fetched, downloads=downloads))["spec"]
    assert stored["baseModel"]["huggingFace"]["tokenSecretRef"] == {"name": "hf", "key": "token"}
    assert stored["baseModel"]["cache"]["sizeLimit"] == "100Gi"
    assert stored["downloads"]["webIdentity"]["audience"] == "sts.amazonaws.com"
    assert stored["downloads"]["caBundle"]["key"] == "ca.crt"
    s3 = {"s3": {"endpoint": "https://minio.storage:9000", "bucket": "models", "key": "llama.tar"}, "sha256": SHA}
    assert apply(crds, k8s_namespace, model(name="s3", baseModel=s3))["spec"]["baseModel"]["s3"]["region"]
    # An adapter may leave its S3 credentials to the pods' web identity.
    web = {"s3": {"endpoint": "https://s3.example", "bucket": "lora", "key": "u42.tar"}}
    apply(crds, k8s_namespace, adapter(name="webid", source=web))
    private = {"huggingFace": {"repo": "org/lora", "revision": "b" * 40, "tokenSecretRef": {"name": "hf"}}}
    stored = apply(crds, k8s_namespace, adapter(name="private", source=private))["spec"]
    assert stored["source"]["huggingFace"]["tokenSecretRef"] == {"name": "hf", "key": "token"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"pod": {"labels": {"saigon.ai/model": "other"}}}, "must not set the operator's labels"),
        ({"pod": {"labels": {"app.kubernetes.io/component": "x"}}}, "must not set the operator's labels"),
        ({"pod": {"annotations": {"saigon.ai/spec-hash": "x"}}}, "must not use the saigon.ai/ prefix"),
        ({"rollout": {"maxSurge": 0, "maxUnavailable": "0%"}}, "cannot both be 0"),
        ({"rollout": {"maxSurge": "-1"}}, "spec.rollout.maxSurge"),
        ({"runtime": {"dtype": "int4"}}, "spec.runtime.dtype"),
        ({"runtime": {"memoryUtilization": 0}}, "spec.runtime.memoryUtilization"),
        ({"gpuResourceName": "gpu"}, "spec.gpuResourceName"),
        ({"baseModel": {"https": {"url": "https://m.example/llama.tar"}}}, "sha256 is required"),
        (
            {"baseModel": {"https": {"url": "https://m.example/m.tar"}, "path": "/m", "sha256": SHA}},
            "exactly one of pvc, path, https, s3 or huggingFace",
        ),
        ({"baseModel": {"path": "/m", "cache": {"claimName": "rwx"}}}, "applies to https, s3 and huggingFace"),
        ({"downloads": {"caBundle": {"configMap": "a", "secret": "b"}}}, "exactly one of configMap or secret"),
        ({"downloads": {"proxy": {"url": "https://user:pw@proxy:3128"}}}, "spec.downloads.proxy.url"),
        ({"downloads": {"webIdentity": {"roleArn": "role/saigon"}}}, "spec.downloads.webIdentity.roleArn"),
        ({"scheduling": {"topologySpreadConstraints": [{"maxSkew": 0, "topologyKey": "z"}]}}, "maxSkew"),
    ],
)
def test_bad_pod_knobs_and_sources_are_rejected_at_admission(
    crds: Cluster, k8s_namespace: str, spec: dict[str, Any], message: str
) -> None:
    assert message in rejected(crds, k8s_namespace, model(**spec))
