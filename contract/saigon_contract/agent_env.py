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
    # How often a canary pod reports its candidate's request figures (promotion metric gates).
    STATS_INTERVAL_S = "SAIGON_AGENT_STATS_INTERVAL_S"
    # Extra CA certificates for https sources (PEM file). Meant for tests and private CAs.
    CA_BUNDLE = "SAIGON_AGENT_CA_BUNDLE"
    # "true": adapter names (user ids) become an `adapter` label on the agent's download and load
    # metrics (SaigonModel spec.agent.metricsAdapterLabels).
    METRICS_ADAPTER_LABELS = "SAIGON_AGENT_METRICS_ADAPTER_LABELS"
    KUBECONFIG = "KUBECONFIG"
