"""Per-user knowledge-graph ("mesh") context: storage, retrieval and prompt assembly (no torch)."""

from saigon_runtime.mesh.prompt import build_chat_prompt, build_prompt
from saigon_runtime.mesh.retrieval import MeshContext, build_context, select_nodes
from saigon_runtime.mesh.schema import (
    InvalidUserId,
    MeshError,
    MeshGraph,
    MeshTooLarge,
    MeshValidationError,
    parse_mesh,
    validate_user_id,
)
from saigon_runtime.mesh.store import MeshStore

__all__ = [
    "InvalidUserId",
    "MeshContext",
    "MeshError",
    "MeshGraph",
    "MeshStore",
    "MeshTooLarge",
    "MeshValidationError",
    "build_chat_prompt",
    "build_context",
    "build_prompt",
    "parse_mesh",
    "select_nodes",
    "validate_user_id",
]
