"""Facts the operator repeats from the runtime (its image has no runtime package) stay equal."""

from __future__ import annotations

from pathlib import Path

import yaml
from saigon_contract import names
from saigon_operator.builders.model import RUNTIME_ENV
from saigon_runtime.adapters import names as runtime_names
from saigon_runtime.config import DEFAULT_PORT, ENV_VARS

CRDS = Path(__file__).resolve().parents[1] / "crds"


def test_every_runtime_variable_the_operator_sets_exists() -> None:
    assert set(RUNTIME_ENV.values()) <= set(ENV_VARS), set(RUNTIME_ENV.values()) - set(ENV_VARS)


def test_default_port_matches_the_runtime() -> None:
    crd = yaml.safe_load((CRDS / "saigonmodels.saigon.ai.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["port"]["default"] == DEFAULT_PORT


def test_names_the_operator_accepts_are_names_the_runtime_accepts() -> None:
    for candidate in ["user_42", "user_a.b-c_d", "domain_law", "global", "user_" + "x" * 63, "user_a..b", "user_.x"]:
        try:
            names.check_adapter_name(candidate)
        except names.InvalidName:
            continue
        runtime_names.check_name(candidate)  # raises if the runtime would refuse it
    for version in ["v1", "2026-01-02", "v1.2.3", "a" * 63]:
        names.check_version(version)
        runtime_names.check_version(version)


def test_the_routing_benchmark_speaks_the_routers_headers() -> None:
    from saigon_contract import haproxy
    from saigon_runtime.bench import routing

    assert routing.USER_HEADER == haproxy.DEFAULT_USER_HEADER
    assert routing.REPLICA_HEADER == haproxy.REPLICA_HEADER
