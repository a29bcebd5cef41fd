"""Path-safe adapter names and versions, and what a name says about its scope."""

from __future__ import annotations

import re

from saigon_runtime.engine.types import InvalidRequest, scope_of

__all__ = ["check_name", "check_user_id", "check_version", "domain_adapter", "scope_of", "user_adapter"]

# A user id or domain is what follows the scope prefix; the whole name stays a single path segment.
_IDENT = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
NAME_RE = re.compile(rf"^(user_{_IDENT}|domain_{_IDENT}|global|[a-z0-9][a-z0-9_-]{{0,62}})$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
USER_ID_RE = re.compile(rf"^{_IDENT}$")


def _safe(value: str) -> bool:
    return ".." not in value and value not in {".", "active"}


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or not _safe(name):
        raise InvalidRequest(f"invalid adapter name {name!r}: use user_<id>, domain_<name>, global or [a-z0-9_-]")
    return name


def check_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version) or not _safe(version):
        raise InvalidRequest(f"invalid adapter version {version!r}: letters, digits, '.', '_' and '-' only")
    return version


def check_user_id(user_id: str) -> str:
    if not isinstance(user_id, str) or not USER_ID_RE.fullmatch(user_id) or ".." in user_id:
        raise InvalidRequest(f"invalid user id {user_id!r}: letters, digits, '.', '_' and '-' only")
    return user_id


def user_adapter(user_id: str) -> str:
    return f"user_{check_user_id(user_id)}"


def domain_adapter(domain: str) -> str:
    return f"domain_{check_user_id(domain)}"
