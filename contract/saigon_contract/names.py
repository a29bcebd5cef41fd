"""Adapter names and versions: derived from a SaigonAdapter's scope, and safe as path components.

The runtime enforces the same shapes on its side; both follow the on-disk layout
`adapters/<name>/<version>/` with `adapters/<name>/active -> <version>`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeGuard

# A user id, a domain or a version: one path segment of at most 63 characters (the CRD's
# scope.user maxLength), never "." / ".." / "active", and no ".." anywhere. Match with
# fullmatch (or the anchored *_PATTERN strings): `$` would let a trailing newline through.
ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
SCOPE_ID_RE = re.compile(ID)
VERSION_RE = re.compile(ID)
ADAPTER_NAME_RE = re.compile(rf"user_{ID}|domain_{ID}|global")
ACTIVE_LINK = "active"
# The same rules as one anchored pattern each, for JSON schemas and pydantic fields (python-re:
# the lookaheads forbid ".." and, since Python's `$` also matches before a final newline, "\n").
_GUARD = r"^(?!.*\.\.)(?!.*\n)"
USER_ID_PATTERN = rf"{_GUARD}{ID}$"
VERSION_PATTERN = rf"{_GUARD}(?!{ACTIVE_LINK}$){ID}$"


def is_scope_id(value: object) -> TypeGuard[str]:
    """A user id or domain: what follows `user_` / `domain_` in an adapter name."""
    return isinstance(value, str) and SCOPE_ID_RE.fullmatch(value) is not None and ".." not in value


def is_version(value: object) -> bool:
    return (
        isinstance(value, str)
        and VERSION_RE.fullmatch(value) is not None
        and value != ACTIVE_LINK
        and ".." not in value
    )


class InvalidName(ValueError):
    pass


def adapter_name(scope: dict[str, object]) -> str:
    """`{"user": "42"}` -> `user_42`; `{"domain": "law"}` -> `domain_law`; `{"global": True}` -> `global`."""
    kinds = [key for key in ("user", "domain", "global") if scope.get(key) not in (None, False)]
    if len(kinds) != 1:
        raise InvalidName("scope needs exactly one of user, domain or global")
    kind = kinds[0]
    if kind == "global":
        return "global"
    value = scope[kind]
    if not is_scope_id(value):
        raise InvalidName(f"scope.{kind} must match {SCOPE_ID_RE.pattern}")
    return f"{kind}_{value}"


def model_of(obj: Mapping[str, Any]) -> str | None:
    """The SaigonModel a SaigonAdapter object names (`spec.modelRef.name`), or None when it names none."""
    model = ((obj.get("spec") or {}).get("modelRef") or {}).get("name")
    return model if isinstance(model, str) and model else None


def check_adapter_name(name: str) -> str:
    if not isinstance(name, str) or not ADAPTER_NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidName(f"adapter name must match {ADAPTER_NAME_RE.pattern}")
    return name


def check_version(version: str) -> str:
    if not is_version(version):
        raise InvalidName(f"version must match {VERSION_RE.pattern}, hold no '..' and not be {ACTIVE_LINK!r}")
    return version
