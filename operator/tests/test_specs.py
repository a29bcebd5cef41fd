"""Spec parsing and the checks the operator makes beyond the CRD schema."""

from __future__ import annotations

from typing import Any

import pytest
from saigon_contract.names import adapter_name
from saigon_contract.specs import SpecError, parse_adapter_spec, parse_model_spec, parse_target

SHA = "b" * 64


def adapter(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "modelRef": {"name": "llama"},
        "scope": {"user": "42"},
        "version": "v1",
        "sha256": SHA,
        "source": {"https": {"url": "https://adapters.example.com/u42/v1.tar"}},
    }
    spec.update(overrides)
    return spec


def test_a_valid_adapter_spec() -> None:
    spec = parse_adapter_spec(adapter())
    assert spec.adapter_name == "user_42"
    assert spec.source.kind == "https" and spec.source.is_remote
    assert spec.promotion.strategy == "Immediate"


@pytest.mark.parametrize(
    ("scope", "name"), [({"user": "42"}, "user_42"), ({"domain": "law"}, "domain_law"), ({"global": True}, "global")]
)
def test_scope_names(scope: dict[str, Any], name: str) -> None:
    assert adapter_name(scope) == name


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"scope": {"user": "42", "domain": "law"}}, "exactly one of user, domain or global"),
        ({"scope": {"user": "../x"}}, "scope.user must match"),
        ({"version": "active"}, "not be 'active'"),
        ({"version": "v1..2"}, "no '..'"),
        ({"sha256": None}, "sha256 is required for remote sources"),
        ({"sha256": "XYZ"}, "sha256"),
        ({"source": {"https": {"url": "http://a.example/x"}}}, "https:// URL"),
        ({"source": {"https": {"url": "https://u:p@a.example/x"}}}, "credentials"),
        ({"source": {}}, "exactly one of https, s3, pvc or huggingFace"),
        ({"source": {"pvc": {"claimName": "c", "path": "../../etc"}}, "sha256": None}, "must not contain '..'"),
        ({"source": {"huggingFace": {"repo": "a/b", "revision": "main"}}}, "revision"),
        ({"promotion": {"strategy": "Canary", "canary": {"replicas": "150%"}}}, "percentage"),
        ({"promotion": {"strategy": "Canary", "canary": {"replicas": 0}}}, "at least 1"),
        ({"promotion": {"gates": {"maxErrorRate": 2}}}, "maxErrorRate"),
        ({"promotion": {"gates": {"evaluation": [{"prompt": "hi"}]}}}, "expect"),
        ({"promotion": {"gates": {"evaluation": [{"prompt": "hi", "completion": "yo"}]}}}, "go together"),
        ({"promotion": {"gates": {"evaluation": [{"prompt": "hi", "maxLoss": -1, "completion": "yo"}]}}}, "maxLoss"),
    ],
)
def test_invalid_adapter_specs_say_why(overrides: dict[str, Any], fragment: str) -> None:
    spec = adapter(**overrides)
    spec = {k: v for k, v in spec.items() if v is not None}
    with pytest.raises(SpecError) as info:
        parse_adapter_spec(spec)
    assert fragment in info.value.message
    assert info.value.reason == "InvalidSpec"


def test_promotion_policies_parse() -> None:
    canary = parse_adapter_spec(
        adapter(promotion={"strategy": "Canary", "canary": {"replicas": "25%", "analysisSeconds": 5}})
    ).promotion
    options = canary.canary_options
    assert options is not None and options.analysis_seconds == 5
    # Percentages round up, never below one pod, never above the replicas there are.
    assert [options.pods(n) for n in (1, 3, 4, 5, 8)] == [1, 1, 1, 2, 2]
    assert parse_adapter_spec(adapter(promotion={"strategy": "Canary"})).promotion.canary_options is not None
    manual = parse_adapter_spec(adapter(promotion={"strategy": "Manual", "approvedVersion": "v1"})).promotion
    assert manual.canary_options is None and manual.approved_version == "v1" and manual.history_limit == 10
    gated = parse_adapter_spec(
        adapter(promotion={"gates": {"maxErrorRate": 0.01, "evaluation": [{"prompt": "2+2", "expect": "4"}]}})
    ).promotion
    assert gated.gates.needs_stats and gated.gates.evaluation[0].max_tokens == 16
    scored = parse_adapter_spec(
        adapter(promotion={"gates": {"evaluation": [{"prompt": "2+2=", "completion": " 4", "maxLoss": 2.5}]}})
    ).promotion.gates.evaluation[0]
    assert scored.expect is None and scored.as_dict() == {"prompt": "2+2=", "maxTokens": 16, "completion": " 4",
                                                         "maxLoss": 2.5}  # fmt: skip


def test_pvc_sources_may_omit_the_digest() -> None:
    spec = parse_adapter_spec({**adapter(source={"pvc": {"claimName": "c", "path": "a/b.tar"}}), "sha256": None} | {})
    assert spec.sha256 is None and not spec.source.is_remote


def test_target_fingerprint_changes_with_the_artifact_only() -> None:
    a = parse_target({"version": "v1", "sha256": SHA, "source": {"https": {"url": "https://a.example/x"}}})
    b = parse_target({"version": "v1", "sha256": SHA, "source": {"https": {"url": "https://a.example/x"}}})
    c = parse_target({"version": "v2", "sha256": SHA, "source": {"https": {"url": "https://a.example/x"}}})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    with pytest.raises(SpecError):
        parse_target({"version": "v1", "source": {"https": {"url": "https://a.example/x"}}})


def model(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "baseModel": {"path": "/models/llama"},
        "image": "saigon/runtime:1",
        "tokenSecretRef": {"name": "tokens"},
    }
    spec.update(overrides)
    return spec


def test_model_defaults() -> None:
    spec = parse_model_spec(model())
    assert (spec.replicas, spec.port, spec.device, spec.cache.max_loras) == (1, 8001, "auto", None)
    assert spec.token_secret_ref.admin_token_key == "admin-token"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            {"baseModel": {"path": "/m", "pvc": {"claimName": "x"}}},
            "exactly one of pvc, path, https, s3 or huggingFace",
        ),
        ({"baseModel": {"path": "relative"}}, "absolute"),
        ({"replicas": -1}, "replicas"),
        ({"port": 80}, "port"),
        ({"adapterSources": {"allowedCidrs": ["nonsense"]}}, "allowedCidrs"),
    ],
)
def test_invalid_model_specs(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        parse_model_spec(model(**overrides))
