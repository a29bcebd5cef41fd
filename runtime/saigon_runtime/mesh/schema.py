"""The mesh file format, its limits and its errors: a per-user knowledge graph, read as untrusted input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from saigon_contract.names import ID, is_scope_id

T = TypeVar("T")

# Limits on one user's mesh. The file cap bounds parse time and memory per request;
# the count caps bound retrieval work.
MAX_MESH_BYTES = 1 << 20
MAX_NODES = 5000
MAX_EDGES = 20000
MAX_NODE_ID_CHARS = 128
MAX_LABEL_CHARS = 256
MAX_TEXT_CHARS = 8192
MAX_RELATION_CHARS = 128
MAX_WEIGHT = 100.0
DEFAULT_WEIGHT = 1.0
DEFAULT_RELATION = "related_to"


class MeshError(ValueError):
    """Base class for mesh errors; `status` and `kind` say how to report it over HTTP."""

    status = 400
    kind = "invalid_mesh"


class InvalidUserId(MeshError):
    kind = "invalid_user_id"


class MeshValidationError(MeshError):
    """The mesh JSON is malformed or breaks a rule; the message names the problem."""


class MeshTooLarge(MeshValidationError):
    status = 413
    kind = "mesh_too_large"


def validate_user_id(user_id: object) -> str:
    # The user id becomes part of a file name (mesh) and of an adapter name (`user_<id>`).
    if not is_scope_id(user_id):
        raise InvalidUserId(f"user id must match {ID} and must not contain '..'; got {_preview(user_id)}")
    return user_id


_STRICT = ConfigDict(strict=True, extra="ignore", frozen=True)

NodeId = Annotated[str, Field(min_length=1, max_length=MAX_NODE_ID_CHARS)]


class MeshNode(BaseModel):
    model_config = _STRICT

    id: NodeId
    label: Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]
    text: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] = ""
    weight: Annotated[float, Field(ge=0.0, le=MAX_WEIGHT, allow_inf_nan=False)] = DEFAULT_WEIGHT


class MeshEdge(BaseModel):
    model_config = _STRICT

    source: NodeId
    target: NodeId
    relation: Annotated[str, Field(min_length=1, max_length=MAX_RELATION_CHARS)] = DEFAULT_RELATION


class MeshGraph(BaseModel):
    model_config = _STRICT

    nodes: Annotated[list[MeshNode], Field(max_length=MAX_NODES)] = []
    edges: Annotated[list[MeshEdge], Field(max_length=MAX_EDGES)] = []
    _derived: dict[str, Any] = PrivateAttr(default_factory=dict)

    def derived(self, key: str, build: Callable[[MeshGraph], T]) -> T:
        """`build(self)`, computed once per graph (a graph is never changed after validation)."""
        if key not in self._derived:
            self._derived[key] = build(self)
        value: T = self._derived[key]
        return value

    @model_validator(mode="after")
    def _check_references(self) -> MeshGraph:
        seen: set[str] = set()
        for i, node in enumerate(self.nodes):
            if node.id in seen:
                raise ValueError(f"nodes[{i}].id: duplicate node id {node.id!r}")
            seen.add(node.id)
        for i, edge in enumerate(self.edges):
            for end in ("source", "target"):
                ref = getattr(edge, end)
                if ref not in seen:
                    raise ValueError(f"edges[{i}].{end}: unknown node id {ref!r}")
        return self


def parse_mesh(data: str | bytes | dict[str, Any] | MeshGraph, *, max_bytes: int = MAX_MESH_BYTES) -> MeshGraph:
    """Validate untrusted mesh input (JSON text, bytes or an already-decoded object)."""
    if isinstance(data, MeshGraph):
        return data
    try:
        if isinstance(data, str | bytes):
            size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
            if size > max_bytes:
                raise MeshTooLarge(f"mesh is {size} bytes; the limit is {max_bytes}")
            return MeshGraph.model_validate_json(data)
        if not isinstance(data, dict):
            raise MeshValidationError(f"mesh must be a JSON object, got {type(data).__name__}")
        return MeshGraph.model_validate(data)
    except ValidationError as exc:
        raise MeshValidationError(f"invalid mesh: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{loc}: {message}" if loc and not message.startswith(loc) else message)
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
