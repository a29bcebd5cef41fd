"""Path-safe adapter names and versions, and what a name says about its scope."""

from __future__ import annotations

import re

from saigon_contract.names import ACTIVE_LINK, ID, VERSION_RE, is_scope_id, is_version

from saigon_runtime.adapters.types import scope_of
from saigon_runtime.errors import InvalidRequest

__all__ = ["check_name", "check_user_id", "check_version", "domain_adapter", "is_name", "scope_of", "user_adapter"]

# The contract's scoped names (user_<id>, domain_<name>, global), plus free local names; always
# one path segment. Match with fullmatch: `$` would let a trailing newline through.
FREE_NAME = r"[a-z0-9][a-z0-9_-]{0,62}"
NAME_RE = re.compile(rf"user_{ID}|domain_{ID}|global|{FREE_NAME}")
__all__ += ["NAME_RE", "VERSION_RE"]


def is_name(name: object) -> bool:
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None and ".." not in name and name != ACTIVE_LINK


def check_name(name: str) -> str:
    if not is_name(name):
        raise InvalidRequest(f"invalid adapter name {name!r}: use user_<id>, domain_<name>, global or [a-z0-9_-]")
    return name


def check_version(version: str) -> str:
    if not is_version(version):
        raise InvalidRequest(f"invalid adapter version {version!r}: letters, digits, '.', '_' and '-' only")
    return version


def check_user_id(user_id: str) -> str:
    if not is_scope_id(user_id):
        raise InvalidRequest(f"invalid user id {user_id!r}: letters, digits, '.', '_' and '-' only")
    return user_id


def user_adapter(user_id: str) -> str:
    return f"user_{check_user_id(user_id)}"


def domain_adapter(domain: str) -> str:
    return f"domain_{check_user_id(domain)}"
