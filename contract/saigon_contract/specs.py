"""Typed views of SaigonModel and SaigonAdapter specs, with the checks the CRD schema cannot make.

The CRD (crds/) rejects most bad input at admission; these models re-check what the
operator and the agent rely on (defence in depth: the CRD installed may be older)
and turn a spec into the values the builders and the agent use.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from saigon_contract import names, placement
from saigon_contract import resources as r


class SpecError(ValueError):
    """A spec that cannot be served as written; `reason` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


def _check_https_url(url: str, *, allow_path: bool = True) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ValueError("must be an https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials")
    if not allow_path and parts.path not in ("", "/"):
        raise ValueError("must be a bare endpoint (no path)")
    return url


def _check_relative_path(path: str) -> str:
    if not path or path.startswith("/") or any(part in ("..",) for part in path.split("/")):
        raise ValueError("must be relative and must not contain '..'")
    if "\x00" in path:
        raise ValueError("must not contain NUL")
    return path


class HttpsSource(_Model):
    url: str

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_https_url(v)


class SecretRef(_Model):
    name: str


class S3Source(_Model):
    endpoint: str
    bucket: str
    key: str
    region: str = "us-east-1"
    # None: the pod's web identity (the SaigonModel's spec.downloads.webIdentity) signs the request.
    credentials_secret_ref: SecretRef | None = Field(default=None, alias="credentialsSecretRef")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        return _check_https_url(v, allow_path=False)


class PvcSource(_Model):
    claim_name: str = Field(alias="claimName")
    path: str

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return _check_relative_path(v)


class HfTokenRef(_Model):
    """A Secret key holding a Hugging Face access token (private repositories)."""

    name: str = Field(min_length=1)
    key: str = Field(default="token", min_length=1)


class HuggingFaceSource(_Model):
    repo: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
    revision: str = Field(pattern=r"^[0-9a-f]{40}$")
    endpoint: str = "https://huggingface.co"
    token_secret_ref: HfTokenRef | None = Field(default=None, alias="tokenSecretRef")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        return _check_https_url(v, allow_path=False)


SourceKind = Literal["https", "s3", "pvc", "huggingFace"]


class AdapterSource(_Model):
    https: HttpsSource | None = None
    s3: S3Source | None = None
    pvc: PvcSource | None = None
    hugging_face: HuggingFaceSource | None = Field(default=None, alias="huggingFace")

    @model_validator(mode="after")
    def _exactly_one(self) -> AdapterSource:
        given = [kind for kind in ("https", "s3", "pvc", "hugging_face") if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError("source needs exactly one of https, s3, pvc or huggingFace")
        return self

    @property
    def kind(self) -> SourceKind:
        if self.https is not None:
            return "https"
        if self.s3 is not None:
            return "s3"
        if self.pvc is not None:
            return "pvc"
        return "huggingFace"

    @property
    def is_remote(self) -> bool:
        return self.kind != "pvc"

    @property
    def credential_secret(self) -> str | None:
        """The Secret the agent reads for this source (S3 keys, a Hugging Face token), if any."""
        if self.s3 is not None and self.s3.credentials_secret_ref is not None:
            return self.s3.credentials_secret_ref.name
        if self.hugging_face is not None and self.hugging_face.token_secret_ref is not None:
            return self.hugging_face.token_secret_ref.name
        return None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class ModelRef(_Model):
    name: str


class CanaryOptions(_Model):
    # A pod count, or a percentage of the replicas ("25%", rounded up, at least one pod).
    replicas: int | str = 1
    analysis_seconds: float = Field(default=60.0, alias="analysisSeconds", ge=0, le=86400)

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, v: int | str) -> int | str:
        if isinstance(v, int):
            if v < 1:
                raise ValueError("must be at least 1")
            return v
        match = re.fullmatch(r"(\d{1,3})%", v)
        if match is None or not 1 <= int(match.group(1)) <= 100:
            raise ValueError("must be a pod count or a percentage from 1% to 100%")
        return v

    def pods(self, replicas: int) -> int:
        """How many of `replicas` pods take the canary (never more than there are)."""
        share = self.replicas
        want = share if isinstance(share, int) else math.ceil(replicas * int(share[:-1]) / 100)
        return max(0, min(replicas, max(1, want)))


class EvalPrompt(_Model):
    prompt: str = Field(min_length=1, max_length=4096)
    expect: str | None = Field(
        default=None, min_length=1, max_length=1024, description="a substring the greedy completion must contain"
    )
    max_tokens: int = Field(default=16, alias="maxTokens", ge=1, le=256)
    completion: str | None = Field(default=None, min_length=1, max_length=4096)
    max_loss: float | None = Field(default=None, alias="maxLoss", ge=0, description="largest mean NLL of completion")

    @model_validator(mode="after")
    def _one_check_at_least(self) -> EvalPrompt:
        if (self.completion is None) != (self.max_loss is None):
            raise ValueError("completion and maxLoss go together")
        if self.expect is None and self.max_loss is None:
            raise ValueError("an evaluation prompt needs expect, or completion with maxLoss")
        return self

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prompt": self.prompt, "maxTokens": self.max_tokens}
        if self.expect is not None:
            out["expect"] = self.expect
        if self.completion is not None:
            out.update(completion=self.completion, maxLoss=self.max_loss)
        return out


class Gates(_Model):
    # Over the requests the new version answered on the canary pods during the analysis window.
    max_error_rate: float | None = Field(default=None, alias="maxErrorRate", ge=0, le=1)
    max_p99_latency_ms: float | None = Field(default=None, alias="maxP99LatencyMs", gt=0)
    evaluation: tuple[EvalPrompt, ...] = Field(default=(), max_length=32)

    @property
    def needs_stats(self) -> bool:
        return self.max_error_rate is not None or self.max_p99_latency_ms is not None


class Promotion(_Model):
    model_config = ConfigDict(populate_by_name=True, extra="allow", frozen=True)
    strategy: Literal["Immediate", "Canary", "Manual"] = "Immediate"
    canary: CanaryOptions | None = None
    gates: Gates = Field(default_factory=Gates)
    # Manual: the version allowed to proceed (the annotation saigon.ai/approve does the same).
    approved_version: str | None = Field(default=None, alias="approvedVersion")
    history_limit: int = Field(default=10, alias="historyLimit", ge=1, le=100)
    # A stage whose pods do not all serve the new version by then rolls back.
    progress_deadline_seconds: float = Field(default=600.0, alias="progressDeadlineSeconds", gt=0)

    @property
    def canary_options(self) -> CanaryOptions | None:
        """Canary runs a canary stage; Manual runs one after approval only when it is configured."""
        if self.strategy == "Canary":
            return self.canary or CanaryOptions()
        if self.strategy == "Manual":
            return self.canary
        return None


class AdapterSpec(_Model):
    model_ref: ModelRef = Field(alias="modelRef")
    scope: dict[str, Any]
    version: str
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    source: AdapterSource
    promotion: Promotion = Field(default_factory=Promotion)

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        return names.check_version(v)

    @model_validator(mode="after")
    def _digest_for_remote(self) -> AdapterSpec:
        if self.source.is_remote and self.sha256 is None:
            raise ValueError("sha256 is required for remote sources (https, s3, huggingFace)")
        return self

    @property
    def adapter_name(self) -> str:
        return names.adapter_name(self.scope)


class Target(_Model):
    """What every pod must serve for one adapter: the operator writes it, agents act on it."""

    version: str
    sha256: str | None = None
    source: AdapterSource

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version, "source": self.source.as_dict()}
        if self.sha256:
            out["sha256"] = self.sha256
        return out

    def fingerprint(self) -> str:
        """Identity of the artifact to fetch: two targets with the same fingerprint need no refetch."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))


def parse_adapter_spec(spec: dict[str, Any]) -> AdapterSpec:
    try:
        parsed = AdapterSpec.model_validate(spec)
        names.check_adapter_name(parsed.adapter_name)
    except (ValidationError, names.InvalidName) as exc:
        raise SpecError("InvalidSpec", _describe(exc)) from None
    return parsed


def parse_target(raw: dict[str, Any]) -> Target:
    try:
        target = Target.model_validate(raw)
        names.check_version(target.version)
    except (ValidationError, names.InvalidName) as exc:
        raise SpecError("InvalidTarget", _describe(exc)) from None
    if target.source.is_remote and not target.sha256:
        raise SpecError("InvalidTarget", "a remote source needs a sha256")
    return target


def target_or_none(raw: object) -> Target | None:
    """A target read back from status: None when absent or not valid (status is ours, but old)."""
    if not isinstance(raw, dict):
        return None
    try:
        return parse_target(raw)
    except SpecError:
        return None


# --- SaigonModel -------------------------------------------------------------------------------


class SecretKeyRef(_Model):
    name: str = Field(min_length=1)
    key: str = Field(default="dsn", min_length=1)


class PvcRef(_Model):
    claim_name: str = Field(alias="claimName")
    sub_path: str | None = Field(default=None, alias="subPath")

    @field_validator("sub_path")
    @classmethod
    def _sub_path(cls, v: str | None) -> str | None:
        return None if v is None else _check_relative_path(v)


class BaseModelCache(_Model):
    """Where a fetched base model is kept: each pod's emptyDir, or one claim all replicas share."""

    claim_name: str | None = Field(default=None, alias="claimName", min_length=1)
    size_limit: Quantity = Field(default="100Gi", alias="sizeLimit")
    medium: Literal["", "Memory"] = ""


class BaseModelSource(_Model):
    pvc: PvcRef | None = None
    path: str | None = None
    # Fetched by an init container into `cache`, verified against `sha256` (issue 17).
    https: HttpsSource | None = None
    s3: S3Source | None = None
    hugging_face: HuggingFaceSource | None = Field(default=None, alias="huggingFace")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    cache: BaseModelCache = Field(default_factory=lambda: BaseModelCache())

    @model_validator(mode="after")
    def _exactly_one(self) -> BaseModelSource:
        given = [k for k in ("pvc", "path", "https", "s3", "hugging_face") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("baseModel needs exactly one of pvc, path, https, s3 or huggingFace")
        if self.path is not None and not self.path.startswith("/"):
            raise ValueError("baseModel.path must be absolute")
        if self.fetched and self.sha256 is None:
            raise ValueError("baseModel.sha256 is required for https, s3 and huggingFace")
        return self

    @property
    def fetched(self) -> bool:
        """Whether an init container fetches the model (else it is on a claim or in the image)."""
        return self.https is not None or self.s3 is not None or self.hugging_face is not None

    def fetch_source(self) -> AdapterSource:
        """The remote source in the agent's source shape (what `saigon-agent fetch-model` reads)."""
        hf = self.hugging_face
        return AdapterSource(
            https=self.https,
            s3=self.s3,
            huggingFace=None
            if hf is None
            else HuggingFaceSource(repo=hf.repo, revision=hf.revision, endpoint=hf.endpoint),
        )


Quantity = int | str


class Resources(_Model):
    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


class AgentOptions(_Model):
    image: str | None = None
    resources: Resources = Field(default_factory=Resources)
    metrics_adapter_labels: bool = Field(default=False, alias="metricsAdapterLabels")


class CacheOptions(_Model):
    max_loras: int | None = Field(default=None, alias="maxLoras", ge=1, le=4096)
    max_cpu_loras: int = Field(default=64, alias="maxCpuLoras", ge=0, le=100_000)
    max_rank: int = Field(default=64, alias="maxRank", ge=1, le=1024)


class TokenSecretRef(_Model):
    name: str
    admin_token_key: str = Field(default="admin-token", alias="adminTokenKey")
    inference_tokens_key: str = Field(default="inference-tokens", alias="inferenceTokensKey")


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, alias="tolerationSeconds")


class Scheduling(_Model):
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: tuple[Toleration, ...] = Field(default=(), max_length=32)
    priority_class_name: str | None = Field(default=None, alias="priorityClassName")
    affinity: Affinity | None = None
    topology_spread_constraints: tuple[TopologySpreadConstraint, ...] = Field(
        default=(), alias="topologySpreadConstraints", max_length=8
    )


class AdapterStorage(_Model):
    size_limit: Quantity = Field(default="10Gi", alias="sizeLimit")
    medium: Literal["", "Memory"] = ""


def endpoint_key(url: str) -> tuple[str, int]:
    """An https endpoint as (host, port): how allow-listed endpoints are compared."""
    parts = urlsplit(url)
    return (parts.hostname or "").lower(), parts.port or 443


class S3Policy(_Model):
    """Which S3 credentials and endpoints a model's SaigonAdapters may use (none by default)."""

    allowed_secrets: tuple[str, ...] = Field(default=(), alias="allowedSecrets", max_length=64)
    allowed_endpoints: tuple[str, ...] = Field(default=(), alias="allowedEndpoints", max_length=32)
    # Adapters without a credentials Secret fetch with the pod's web identity (its IAM role).
    allow_web_identity: bool = Field(default=False, alias="allowWebIdentity")

    @field_validator("allowed_endpoints")
    @classmethod
    def _endpoints(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_https_url(url, allow_path=False) for url in v)

    def refusal(self, source: S3Source) -> str | None:
        """Why this model does not let an adapter use `source`, or None."""
        if source.credentials_secret_ref is None:
            if not self.allow_web_identity:
                return (
                    "the source names no credentialsSecretRef and the SaigonModel's "
                    "spec.adapterSources.s3.allowWebIdentity is false"
                )
        elif (secret := source.credentials_secret_ref.name) not in self.allowed_secrets:
            return (
                f"the Secret {secret} is not in the SaigonModel's spec.adapterSources.s3.allowedSecrets "
                f"({', '.join(self.allowed_secrets) or 'none'})"
            )
        if endpoint_key(source.endpoint) not in {endpoint_key(e) for e in self.allowed_endpoints}:
            return (
                f"the endpoint {source.endpoint} is not in the SaigonModel's spec.adapterSources.s3.allowedEndpoints "
                f"({', '.join(self.allowed_endpoints) or 'none'})"
            )
        return None


class HuggingFacePolicy(_Model):
    """Which token Secrets this model's SaigonAdapters may name for private Hugging Face repositories."""

    allowed_token_secrets: tuple[str, ...] = Field(default=(), alias="allowedTokenSecrets", max_length=64)

    def refusal(self, source: HuggingFaceSource) -> str | None:
        ref = source.token_secret_ref
        if ref is None or ref.name in self.allowed_token_secrets:
            return None
        return (
            f"the Secret {ref.name} is not in the SaigonModel's spec.adapterSources.huggingFace.allowedTokenSecrets "
            f"({', '.join(self.allowed_token_secrets) or 'none'})"
        )


class AdapterSources(_Model):
    pvcs: tuple[str, ...] = Field(default=(), max_length=16)
    allowed_cidrs: tuple[str, ...] = Field(default=(), alias="allowedCidrs", max_length=32)
    s3: S3Policy = Field(default_factory=S3Policy)
    hugging_face: HuggingFacePolicy = Field(default_factory=HuggingFacePolicy, alias="huggingFace")

    @property
    def allowed_secrets(self) -> frozenset[str]:
        """Every credential Secret the model lets its adapters' sources name."""
        return frozenset(self.s3.allowed_secrets) | frozenset(self.hugging_face.allowed_token_secrets)

    def refusal(self, source: AdapterSource) -> str | None:
        """Why this model does not let an adapter use `source` (its credentials, its endpoint), or None."""
        if source.s3 is not None:
            return self.s3.refusal(source.s3)
        if source.hugging_face is not None:
            return self.hugging_face.refusal(source.hugging_face)
        return None

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in v:
            ipaddress.ip_network(cidr, strict=False)  # raises ValueError on garbage
        return v


class DisruptionBudget(_Model):
    max_unavailable: Quantity = Field(default=1, alias="maxUnavailable")


# The official HAProxy image, pinned; a SaigonModel may name another (spec.router.image).
ROUTER_IMAGE = "haproxy:3.0.10"


class RouterOptions(_Model):
    enabled: bool = False
    replicas: int = Field(default=2, ge=1, le=100)
    image: str = Field(default=ROUTER_IMAGE, min_length=1)
    user_header: str = Field(default="X-Saigon-User", alias="userHeader", pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    hash_balance_factor: int = Field(default=150, alias="hashBalanceFactor", ge=0, le=1000)
    server_slots: int = Field(default=0, alias="serverSlots", ge=0, le=1024)
    timeout_seconds: int = Field(default=600, alias="timeoutSeconds", ge=10, le=86400)
    cluster_domain: str = Field(default="cluster.local", alias="clusterDomain", min_length=1)
    resources: Resources = Field(default_factory=Resources)

    @field_validator("hash_balance_factor")
    @classmethod
    def _factor(cls, v: int) -> int:
        if 0 < v <= 100:
            raise ValueError("must be 0 (no bound) or more than 100")
        return v


class PlacementOptions(_Model):
    """Each user adapter on `replicas` pods (0: every adapter on every pod); shared adapters on all.
    Only with the router, which sends each user to those pods (saigon_contract.placement)."""

    replicas: int = Field(default=placement.DEFAULT_REPLICAS, ge=0, le=16)


class AuthOptions(_Model):
    """Inference authentication: Required (the default) wherever user adapters or meshes exist."""

    inference: Literal["Required", "Disabled"] = "Required"
    # Users given a credential besides those with a user adapter of this model (mesh-only users).
    users: tuple[str, ...] = Field(default=(), max_length=10000)

    @field_validator("users")
    @classmethod
    def _users(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for user in v:
            # A full match (no trailing newline), as the runtime checks user ids.
            if not names.is_scope_id(user):
                raise ValueError(f"users: {user[:70]!r} is not a valid user id")
        return v


class FilesStore(_Model):
    claim_name: str | None = Field(default=None, alias="claimName")


class PostgresStore(_Model):
    dsn_secret_ref: SecretKeyRef = Field(alias="dsnSecretRef")


class UserStoreOptions(_Model):
    """Per-user data (meshes, the user -> domain map): files (a claim, else the pod's emptyDir) or PostgreSQL."""

    files: FilesStore | None = None
    postgres: PostgresStore | None = None

    @model_validator(mode="after")
    def _at_most_one(self) -> UserStoreOptions:
        if self.files is not None and self.postgres is not None:
            raise ValueError("userStore takes one of files or postgres")
        return self


class MeshOptions(_Model):
    openai_default: bool = Field(default=False, alias="openaiDefault")
    max_context_tokens: int = Field(default=256, alias="maxContextTokens", ge=0, le=32768)


class AuditOptions(_Model):
    destination: Literal["Stdout", "Volume"] = "Stdout"
    claim_name: str | None = Field(default=None, alias="claimName")
    log_prompts: bool = Field(default=False, alias="logPrompts")
    raw_user_ids: bool = Field(default=False, alias="rawUserIds")

    @model_validator(mode="after")
    def _claim_for_volume(self) -> AuditOptions:
        if self.destination == "Volume" and not self.claim_name:
            raise ValueError("audit.destination Volume needs audit.claimName")
        return self


class LabelRequirement(_Model):
    key: str = Field(min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = Field(default=(), max_length=64)


class LabelSelector(_Model):
    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: tuple[LabelRequirement, ...] = Field(default=(), alias="matchExpressions", max_length=16)


class IpBlock(_Model):
    cidr: str
    except_: tuple[str, ...] = Field(default=(), alias="except", max_length=16)

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        ipaddress.ip_network(v, strict=False)
        return v


class NetworkPeer(_Model):
    """A NetworkPolicy peer: pods (by label, in namespaces by label) or an IP block."""

    pod_selector: LabelSelector | None = Field(default=None, alias="podSelector")
    namespace_selector: LabelSelector | None = Field(default=None, alias="namespaceSelector")
    ip_block: IpBlock | None = Field(default=None, alias="ipBlock")

    @model_validator(mode="after")
    def _one_kind(self) -> NetworkPeer:
        selectors = self.pod_selector is not None or self.namespace_selector is not None
        if selectors == (self.ip_block is not None):
            raise ValueError("a peer needs podSelector and/or namespaceSelector, or ipBlock")
        return self

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)


class NetworkPolicyOptions(_Model):
    enabled: bool = True
    runtime_from: tuple[NetworkPeer, ...] = Field(default=(), alias="runtimeFrom", max_length=16)
    agent_from: tuple[NetworkPeer, ...] = Field(default=(), alias="agentFrom", max_length=16)


# --- Pod knobs, runtime settings, rollout and download credentials (issue 17 items 4, 5) -------

# Labels the operator sets on every runtime pod (its selectors and app.kubernetes.io identity) and
# the annotation prefix it and the agent write: spec.pod may add others, never these.
RESERVED_POD_LABELS = frozenset(
    {r.MODEL_LABEL, r.COMPONENT_LABEL, r.MANAGED_BY_LABEL, "app.kubernetes.io/name", "app.kubernetes.io/instance"}
)
RESERVED_ANNOTATION_PREFIX = f"{r.GROUP}/"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"


class LocalObjectRef(_Model):
    name: str = Field(min_length=1, max_length=253)


class PodOptions(_Model):
    """Metadata and identity of the runtime pods."""

    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    image_pull_secrets: tuple[LocalObjectRef, ...] = Field(default=(), alias="imagePullSecrets", max_length=16)
    # A ServiceAccount the user owns (a cloud workload identity, say); the agent's Role is bound to it.
    service_account_name: str | None = Field(default=None, alias="serviceAccountName", min_length=1)
    runtime_class_name: str | None = Field(default=None, alias="runtimeClassName", min_length=1)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        taken = sorted(RESERVED_POD_LABELS & set(v))
        if taken:
            raise ValueError(f"{', '.join(taken)} are the operator's labels and cannot be set")
        return v

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, v: dict[str, str]) -> dict[str, str]:
        taken = sorted(k for k in v if k.startswith(RESERVED_ANNOTATION_PREFIX))
        if taken:
            raise ValueError(f"{', '.join(taken)}: the {RESERVED_ANNOTATION_PREFIX} prefix is the operator's")
        return v


class TopologySpreadConstraint(_Model):
    max_skew: int = Field(alias="maxSkew", ge=1)
    topology_key: str = Field(alias="topologyKey", min_length=1, max_length=317)
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = Field(
        default="DoNotSchedule", alias="whenUnsatisfiable"
    )
    # None: the model's runtime pods (its selector labels).
    label_selector: LabelSelector | None = Field(default=None, alias="labelSelector")
    min_domains: int | None = Field(default=None, alias="minDomains", ge=1)
    match_label_keys: tuple[str, ...] = Field(default=(), alias="matchLabelKeys", max_length=16)
    node_affinity_policy: Literal["Honor", "Ignore"] | None = Field(default=None, alias="nodeAffinityPolicy")
    node_taints_policy: Literal["Honor", "Ignore"] | None = Field(default=None, alias="nodeTaintsPolicy")


class Affinity(_Model):
    """A Pod's affinity, passed on as written (the CRD schema types it; the API server checks it)."""

    node_affinity: dict[str, Any] | None = Field(default=None, alias="nodeAffinity")
    pod_affinity: dict[str, Any] | None = Field(default=None, alias="podAffinity")
    pod_anti_affinity: dict[str, Any] | None = Field(default=None, alias="podAntiAffinity")

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class RuntimeOptions(_Model):
    """Runtime settings; unset ones keep the runtime's own defaults (runtime/saigon_runtime/config.py)."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_batch_size: int | None = Field(default=None, alias="maxBatchSize", ge=1, le=4096)
    max_queue: int | None = Field(default=None, alias="maxQueue", ge=0, le=1_000_000)
    max_new_tokens: int | None = Field(default=None, alias="maxNewTokens", ge=1, le=1_048_576)
    memory_utilization: float | None = Field(default=None, alias="memoryUtilization", gt=0, le=1)


class RolloutOptions(_Model):
    """The Deployment's rolling update. Unset: with GPUs, replace one pod at a time without a surge
    pod (a full GPU pool has no room for one); without, surge one pod and keep every pod serving."""

    max_surge: Quantity | None = Field(default=None, alias="maxSurge")
    max_unavailable: Quantity | None = Field(default=None, alias="maxUnavailable")

    @model_validator(mode="after")
    def _progress(self) -> RolloutOptions:
        both_given = self.max_surge is not None and self.max_unavailable is not None
        if both_given and _zero(self.max_surge) and _zero(self.max_unavailable):  # type: ignore[arg-type]
            raise ValueError("rollout: maxSurge and maxUnavailable cannot both be 0")
        return self

    def resolved(self, gpus: int) -> dict[str, Quantity]:
        default_surge, default_unavailable = (0, 1) if gpus > 0 else (1, 0)
        surge = default_surge if self.max_surge is None else self.max_surge
        unavailable = default_unavailable if self.max_unavailable is None else self.max_unavailable
        if _zero(surge) and _zero(unavailable):
            # The one combination the API server refuses: say which side to give instead.
            unavailable = 1 if self.max_unavailable is None else unavailable
            surge = 1 if self.max_surge is None else surge
        return {"maxSurge": surge, "maxUnavailable": unavailable}


def _zero(q: Quantity) -> bool:
    return q in (0, "0", "0%")


class WebIdentity(_Model):
    """S3 credentials from the pod's ServiceAccount token (IRSA, or any OIDC STS such as MinIO's)."""

    role_arn: str = Field(alias="roleArn", max_length=2048, pattern=r"^arn:[A-Za-z0-9_.:/+=,@-]+$")
    audience: str = Field(default="sts.amazonaws.com", min_length=1, max_length=253)
    sts_endpoint: str = Field(default="https://sts.amazonaws.com", alias="stsEndpoint")

    @field_validator("sts_endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        return _check_https_url(v, allow_path=False)


class CaBundleRef(_Model):
    """Extra CA certificates (PEM) the downloads trust besides the system ones: a private CA."""

    config_map: str | None = Field(default=None, alias="configMap", min_length=1)
    secret: str | None = Field(default=None, min_length=1)
    key: str = Field(default="ca.crt", min_length=1, pattern=r"^[-._A-Za-z0-9]+$")

    @model_validator(mode="after")
    def _one(self) -> CaBundleRef:
        if (self.config_map is None) == (self.secret is None):
            raise ValueError("caBundle needs exactly one of configMap or secret")
        return self


class ProxyOptions(_Model):
    """An HTTP proxy the downloads tunnel through (CONNECT); TLS stays end to end."""

    url: str
    no_proxy: tuple[str, ...] = Field(default=(), alias="noProxy", max_length=64)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError("must be http://host:port (the tunnel carries TLS to the source)")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials")
        return v


class DownloadOptions(_Model):
    """How the agent and the base-model fetch reach their sources."""

    web_identity: WebIdentity | None = Field(default=None, alias="webIdentity")
    ca_bundle: CaBundleRef | None = Field(default=None, alias="caBundle")
    proxy: ProxyOptions | None = None


class ModelSpec(_Model):
    base_model: BaseModelSource = Field(alias="baseModel")
    image: str = Field(min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", alias="imagePullPolicy"
    )
    agent: AgentOptions = Field(default_factory=AgentOptions)
    replicas: int = Field(default=1, ge=0, le=1000)
    gpus: int = Field(default=0, ge=0, le=16)
    resources: Resources = Field(default_factory=Resources)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cache: CacheOptions = Field(default_factory=CacheOptions)
    port: int = Field(default=8001, ge=1024, le=65535)
    token_secret_ref: TokenSecretRef = Field(alias="tokenSecretRef")
    scheduling: Scheduling = Field(default_factory=Scheduling)
    adapter_storage: AdapterStorage = Field(default_factory=AdapterStorage, alias="adapterStorage")
    adapter_sources: AdapterSources = Field(default_factory=AdapterSources, alias="adapterSources")
    pod_disruption_budget: DisruptionBudget = Field(default_factory=DisruptionBudget, alias="podDisruptionBudget")
    termination_grace_period_seconds: int = Field(default=60, ge=0, le=3600, alias="terminationGracePeriodSeconds")
    gie_metrics: bool = Field(default=False, alias="gieMetrics")
    router: RouterOptions = Field(default_factory=RouterOptions)
    placement: PlacementOptions = Field(default_factory=PlacementOptions)
    auth: AuthOptions = Field(default_factory=AuthOptions)
    user_store: UserStoreOptions = Field(default_factory=UserStoreOptions, alias="userStore")
    mesh: MeshOptions = Field(default_factory=MeshOptions)
    audit: AuditOptions = Field(default_factory=AuditOptions)

    network_policy: NetworkPolicyOptions = Field(default_factory=NetworkPolicyOptions, alias="networkPolicy")

    gpu_resource_name: str = Field(
        default=DEFAULT_GPU_RESOURCE,
        alias="gpuResourceName",
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
    )
    pod: PodOptions = Field(default_factory=PodOptions)
    runtime: RuntimeOptions = Field(default_factory=RuntimeOptions)
    rollout: RolloutOptions = Field(default_factory=RolloutOptions)
    downloads: DownloadOptions = Field(default_factory=DownloadOptions)

    @model_validator(mode="after")
    def _cache_claim(self) -> ModelSpec:
        if self.base_model.cache.claim_name is not None and not self.base_model.fetched:
            raise ValueError("baseModel.cache applies to https, s3 and huggingFace only")
        return self

    def placed_replicas(self) -> int:
        """Pods per user adapter; 0: every pod. Without the router nothing steers a user to
        their adapter's pods, so every adapter goes everywhere."""
        return self.placement.replicas if self.router.enabled else 0


def parse_model_spec(spec: dict[str, Any]) -> ModelSpec:
    try:
        return ModelSpec.model_validate(spec)
    except ValidationError as exc:
        raise SpecError("InvalidSpec", _describe(exc)) from None


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "spec"
            msg = str(err["msg"]).removeprefix("Value error, ")
            parts.append(f"{where}: {msg}")
        return "; ".join(parts)
    return str(exc)
