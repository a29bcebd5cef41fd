"""Adapter names and versions: derived from a SaigonAdapter's scope, and safe as path components.

The runtime enforces the same shapes on its side; both follow the on-disk layout
`adapters/<name>/<version>/` with `adapters/<name>/active -> <version>`.
"""

from __future__ import annotations

import re

# The runtime's rules (runtime/saigon_runtime/adapters/names.py): one path segment, at most
# 63 characters, never "." / ".." / "active", and no ".." anywhere.
_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
SCOPE_ID_RE = re.compile(rf"^{_ID}$")
VERSION_RE = re.compile(rf"^{_ID}$")
ADAPTER_NAME_RE = re.compile(rf"^(user_{_ID}|domain_{_ID}|global)$")
ACTIVE_LINK = "active"


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
    if not isinstance(value, str) or not SCOPE_ID_RE.match(value) or ".." in value:
        raise InvalidName(f"scope.{kind} must match {SCOPE_ID_RE.pattern}")
    return f"{kind}_{value}"


def check_adapter_name(name: str) -> str:
    if not ADAPTER_NAME_RE.match(name) or ".." in name:
        raise InvalidName(f"adapter name must match {ADAPTER_NAME_RE.pattern}")
    return name


def check_version(version: str) -> str:
    if not VERSION_RE.match(version) or version == ACTIVE_LINK or ".." in version:
        raise InvalidName(f"version must match {VERSION_RE.pattern}, hold no '..' and not be {ACTIVE_LINK!r}")
    return version
