"""The agent sidecar's environment variable names: the operator's pod builder sets them, the agent reads them."""

from __future__ import annotations


class ENV:
    NAMESPACE = "SAIGON_AGENT_NAMESPACE"
    POD_NAME = "SAIGON_AGENT_POD_NAME"
    MODEL = "SAIGON_AGENT_MODEL"
    ADAPTERS_DIR = "SAIGON_ADAPTERS_DIR"  # the same variable (and directory) the runtime reads
    RUNTIME_URL = "SAIGON_AGENT_RUNTIME_URL"
    ADMIN_TOKEN = "SAIGON_ADMIN_TOKEN"  # the same secret the runtime checks
    SOURCES_ROOT = "SAIGON_AGENT_SOURCES_ROOT"
    ALLOWED_CIDRS = "SAIGON_AGENT_ALLOWED_CIDRS"
    HEALTH_PORT = "SAIGON_AGENT_HEALTH_PORT"
    HEALTH_HOST = "SAIGON_AGENT_HEALTH_HOST"
    MAX_ARTIFACT_BYTES = "SAIGON_AGENT_MAX_ARTIFACT_BYTES"
    FETCH_TIMEOUT_S = "SAIGON_AGENT_FETCH_TIMEOUT_S"
    CONCURRENCY = "SAIGON_AGENT_CONCURRENCY"
    RESYNC_S = "SAIGON_AGENT_RESYNC_S"
    # How long an adapter placed on other pods stays here (the router follows a new placement late).
    LINGER_S = "SAIGON_AGENT_LINGER_S"
    # How often a canary pod reports its candidate's request figures (promotion metric gates).
    STATS_INTERVAL_S = "SAIGON_AGENT_STATS_INTERVAL_S"
    # Extra CA certificates for https sources (PEM file). Meant for tests and private CAs.
    CA_BUNDLE = "SAIGON_AGENT_CA_BUNDLE"
    KUBECONFIG = "KUBECONFIG"
    # An HTTP proxy for downloads (CONNECT tunnels) and the hosts that bypass it, comma separated.
    # Saigon's own names: an HTTPS_PROXY a cluster injects into every pod never changes the agent.
    HTTPS_PROXY = "SAIGON_AGENT_HTTPS_PROXY"
    NO_PROXY = "SAIGON_AGENT_NO_PROXY"
    # S3 web identity: the names the AWS SDKs read (the EKS pod identity webhook sets the first two).
    AWS_ROLE_ARN = "AWS_ROLE_ARN"
    AWS_WEB_IDENTITY_TOKEN_FILE = "AWS_WEB_IDENTITY_TOKEN_FILE"
    AWS_ENDPOINT_URL_STS = "AWS_ENDPOINT_URL_STS"


class FETCH_MODEL_ENV:
    """`saigon-agent fetch-model` (the base model's init container): what to fetch, and where."""

    SOURCE = "SAIGON_MODEL_SOURCE"  # a JSON source: {"https": ...} | {"s3": ...} | {"huggingFace": ...}
    SHA256 = "SAIGON_MODEL_SHA256"
    CACHE_DIR = "SAIGON_MODEL_CACHE_DIR"  # the model lands in <cache>/<sha256>/
    MAX_BYTES = "SAIGON_MODEL_MAX_BYTES"
    # Static S3 keys and a Hugging Face token, from Secrets by secretKeyRef.
    AWS_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
    AWS_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
    AWS_SESSION_TOKEN = "AWS_SESSION_TOKEN"
    HF_TOKEN = "HF_TOKEN"
