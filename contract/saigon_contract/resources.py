"""Names the operator, the agent and the CRDs (crds/) agree on: API coordinates, labels, annotations."""

from __future__ import annotations

GROUP = "saigon.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

MODEL_KIND = "SaigonModel"
MODEL_PLURAL = "saigonmodels"
ADAPTER_KIND = "SaigonAdapter"
ADAPTER_PLURAL = "saigonadapters"

# Labels on every child object and runtime pod of a SaigonModel.
MODEL_LABEL = "saigon.ai/model"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "saigon-operator"

# Pod template annotation: a digest of everything that shapes the pod, so spec changes roll it.
SPEC_HASH_ANNOTATION = "saigon.ai/spec-hash"
# Pod annotation written by the agent: what this pod serves (see saigon_contract.reports).
REPORT_ANNOTATION = "saigon.ai/adapters"
# Pod readiness gate the agent sets once the adapters the pod must serve are loaded.
READINESS_GATE = "saigon.ai/adapters-synced"
FINALIZER = "saigon.ai/finalizer"
KOPF_PREFIX = "kopf.saigon.ai"
FIELD_MANAGER = "saigon-operator"
AGENT_FIELD_MANAGER = "saigon-agent"

# Paths inside a runtime pod.
ADAPTERS_MOUNT = "/var/lib/saigon/adapters"
SOURCES_MOUNT = "/mnt/saigon-sources"
BASE_MODEL_MOUNT = "/models/base"
AGENT_HEALTH_PORT = 8081
