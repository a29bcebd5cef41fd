"""The CRD schemas (crds/) and the pydantic spec models (saigon_contract.specs) agree on bounds.

For every field both define: numeric bounds, item counts and enums must be the same on both
sides (one side without a bound the other has is a disagreement), and so must a default,
a length limit or a pattern that both state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from saigon_contract.specs import AdapterSpec, ModelSpec

REPO = Path(__file__).resolve().parent.parent
STRICT = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "enum")
WHEN_BOTH = ("default", "minLength", "maxLength", "pattern")


def crd_spec(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((REPO / "crds" / name).read_text())
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema node with $ref, Optional (anyOf null) and const unwrapped."""
    if "$ref" in schema:
        schema = {**_resolve(defs[schema["$ref"].rsplit("/", 1)[1]], defs), **schema}
    non_null = [s for s in schema.get("anyOf", ()) if s.get("type") != "null"]
    if len(non_null) == 1:
        schema = {**_resolve(non_null[0], defs), **{k: v for k, v in schema.items() if k != "anyOf"}}
    if "const" in schema and "enum" not in schema:
        schema = {**schema, "enum": [schema["const"]]}
    return schema


def _crd_bounds(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI v3.0's boolean exclusiveMinimum/Maximum in JSON Schema's numeric form."""
    out = dict(schema)
    for side, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(side) is True:
            out[side] = out.pop(bound)
        elif out.get(side) is False:
            del out[side]
    return out


def disagreements(crd: dict[str, Any], py: dict[str, Any], defs: dict[str, Any], path: str) -> list[str]:
    py, crd = _resolve(py, defs), _crd_bounds(crd)
    out = []
    for key in STRICT + WHEN_BOTH:
        a, b = crd.get(key), py.get(key)
        if key in WHEN_BOTH and (a is None or b is None):
            continue
        if key == "enum" and a is not None and b is not None:
            a, b = sorted(a), sorted(b)
        if key == "default" and isinstance(b, list):
            a = list(a) if isinstance(a, list | tuple) else a
        if a != b:
            out.append(f"{path}: {key} is {a!r} in the CRD, {b!r} in the model")
    for name, sub in (crd.get("properties") or {}).items():
        if name in (py.get("properties") or {}):
            out += disagreements(sub, py["properties"][name], defs, f"{path}.{name}")
    if isinstance(crd.get("items"), dict) and isinstance(py.get("items"), dict):
        out += disagreements(crd["items"], py["items"], defs, f"{path}[]")
    return out


@pytest.mark.parametrize(
    ("crd", "model"), [("saigonadapters.saigon.ai.yaml", AdapterSpec), ("saigonmodels.saigon.ai.yaml", ModelSpec)]
)
def test_crd_and_model_bounds_agree(crd: str, model: type[BaseModel]) -> None:
    schema = model.model_json_schema(by_alias=True)
    assert disagreements(crd_spec(crd), schema, schema.get("$defs", {}), "spec") == []


def test_the_comparison_sees_a_bound_only_one_side_has() -> None:
    crd = {"type": "object", "properties": {"replicas": {"type": "integer", "minimum": 1, "maximum": 100}}}
    py = {"type": "object", "properties": {"replicas": {"type": "integer", "minimum": 1}}}
    assert disagreements(crd, py, {}, "spec") == ["spec.replicas: maximum is 100 in the CRD, None in the model"]
