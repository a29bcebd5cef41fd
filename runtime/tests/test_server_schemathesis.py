"""Schemathesis against /openapi.json of a live server: no 5xx, and the server agrees with its
own schema (status codes, content types, response bodies, auth, rejection of invalid data)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client.parser import text_string_to_metric_families
from saigon_runtime.server.app import API_VERSION, all_routes
from saigon_runtime.server.openapi import build_openapi
from saigon_runtime.testing.tiny import install_adapter
from schemathesis import Case
from schemathesis.config._checks import NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, NegativeDataRejectionConfig
from schemathesis.specs.openapi import checks as openapi_checks
from server_support import ADMIN_TOKEN, LiveServer, live_server, make_config

# A request can be valid by the schema and still be refused for a reason JSON Schema cannot
# express: a prompt longer than the model's context, adapter files that fail validation, a mesh
# whose edges name missing nodes. Those refusals must carry one of these codes; a schema-level
# refusal ("invalid_value", "invalid_json") of schema-valid data is a disagreement and fails.
SEMANTIC_CODES = {
    "context_length_exceeded",
    "adapter_rejected",
    "invalid_request_error",  # the engine's or adapter store's own validation
    "invalid_mesh",
    "mesh_too_large",
    "batch_too_large",
    "bad_messages",
    "no_user",  # mesh_context asked for, with no user to take it from
    "mesh_disabled",  # mesh_context asked for on a runtime without a user store
    "user_mismatch",  # the user field, X-Saigon-User and a user_<id> model disagree
    "unsupported_value",  # OpenAI-route rules across fields or against the model (routes_openai._bad)
}


def semantic_rejections_only(ctx: Any, response: Any, case: Case) -> None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code not in (400, 413, 422):
        return
    code = response.json()["error"]["code"]
    assert code in SEMANTIC_CODES, f"schema-valid request refused with {response.status_code} {code!r}"


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, adapter_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("schemathesis")
    install_adapter(root / "adapters", "user_alice", "v1", adapter_factory(tiny_llama_dir, seed=1))
    config = make_config(
        tiny_llama_dir,
        adapters_dir=root / "adapters",
        mesh_dir=root / "mesh",
        log_dir=root / "logs",
        inference_tokens={"alice-token": "alice"},
        max_new_tokens=8,
    )
    with live_server(config) as live:
        yield live


# The document the server above serves (checked by the first test): built from the same route
# table and the same auth setting. (Loaded at import because schemathesis' lazy fixture loader
# does not work with this pytest version.)
DOCUMENT = build_openapi(all_routes(), inference_auth=True, version=API_VERSION)
schema = schemathesis.openapi.from_dict(DOCUMENT)
# Too much data (more edges than maxItems, a longer string than maxLength) may be refused by
# the body-size limit before the schema is consulted: 413 is a rejection too.
schema.config.checks.negative_data_rejection = NegativeDataRejectionConfig(
    expected_statuses=[*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"]
)


def test_the_served_document_is_the_one_under_test(server: LiveServer) -> None:
    assert requests.get(f"{server.url}/openapi.json", timeout=10).json() == DOCUMENT


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("SAIGON_FUZZ_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case: Case, server: LiveServer) -> None:
    # Random model names almost never exist; point most requests at real ones so generation runs.
    # Any string is schema-valid for `model`, so this never changes whether a case is valid.
    body = case.body
    model = body.get("model") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(model, str) and 1 <= len(model) <= 256 and len(model) % 4:
        body["model"] = ("user_alice", server.engine.model_id)[len(model) % 2]
    positive_acceptance = openapi_checks.positive_data_acceptance
    case.call_and_validate(
        base_url=server.url,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        excluded_checks=[positive_acceptance],
        additional_checks=[semantic_rejections_only],
        timeout=60,
    )


def test_the_run_reached_every_route_without_a_server_error(server: LiveServer) -> None:
    """Runs after the schemathesis test (file order): read the server's own request counter."""
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(requests.get(f"{server.url}/metrics", timeout=10).text):
        if family.name == "saigon_http_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = (sample.labels["route"], sample.labels["code"])
                    counts[key] = counts.get(key, 0) + sample.value
    assert not [key for key in counts if key[1].startswith("5")], counts
    answered = {route for route, code in counts if code == "200"}
    assert {"openai_completions", "openai_chat_completions", "saigon_infer", "saigon_infer_batch"} <= answered
