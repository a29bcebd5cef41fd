"""The user store's interface: per-user data (mesh graphs, the user -> domain map) behind one
small, synchronous, thread-safe API. Callers on an event loop run it in a worker thread."""

from __future__ import annotations

from typing import Any, Protocol

from saigon_contract.names import ID, is_scope_id

from saigon_runtime.mesh.schema import MeshError, MeshGraph

MeshInput = str | bytes | dict[str, Any] | MeshGraph


class StoreUnavailable(MeshError):
    """The store cannot be reached (a database down): this request fails, the server goes on."""

    status = 503
    kind = "user_store_unavailable"


class InvalidDomain(MeshError):
    kind = "invalid_domain"


def validate_domain(domain: object) -> str:
    # A domain becomes part of an adapter name (`domain_<name>`): the user id's rule.
    if not is_scope_id(domain):
        raise InvalidDomain(f"domain must match {ID} and must not contain '..'")
    return domain


class UserStore(Protocol):
    """Per-user data. `kind` names the backend (files, postgres) for status and logs."""

    kind: str

    def get_mesh(self, user_id: str) -> MeshGraph | None:
        """The user's validated graph, or None when they have none (MeshError for a bad one)."""
        ...

    def put_mesh(self, user_id: str, data: MeshInput) -> MeshGraph:
        """Validate and store the user's graph (replacing any), visible to every replica after."""
        ...

    def delete_mesh(self, user_id: str) -> bool: ...

    def domain_of(self, user_id: str) -> str | None: ...

    def set_domain(self, user_id: str, domain: str | None) -> None:
        """Put the user in `domain` (None: in none)."""
        ...

    def close(self) -> None: ...
