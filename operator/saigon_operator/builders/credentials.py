"""Pure builders for the Secrets the operator creates for a SaigonModel: the inference credentials
(one bearer token per user, mounted into the runtime as a file it re-reads) and the audit log's
per-install salt (user ids in the audit log are HMACs under it).

The tokens Secret holds one `token=user_id` line per user. The operator only ever adds lines, for
users who have none (a new user adapter, a new name in spec.auth.users): an administrator rotates a
user's token by editing its line, or removes the line to have a fresh token issued; either way the
kubelet updates the mounted file and the runtime picks it up without a rollout.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterable
from typing import Any

TOKENS_KEY = "tokens"
SALT_KEY = "salt"
TOKEN_BYTES = 32


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_salt() -> str:
    return secrets.token_hex(32)


def users_with_tokens(text: str) -> set[str]:
    users = set()
    for line in text.splitlines():
        token, sep, user = line.strip().partition("=")
        if sep and token and user and not line.lstrip().startswith("#"):
            users.add(user.strip())
    return users


def merged_tokens(existing: str, users: Iterable[str], issue: Callable[[], str] = new_token) -> str:
    """`existing` with a line added for each user who has no token yet (existing lines kept as written)."""
    have = users_with_tokens(existing)
    missing = sorted(set(users) - have)
    if not missing:
        return existing
    lines = [line for line in existing.splitlines() if line.strip()]
    lines += [f"{issue()}={user}" for user in missing]
    return "\n".join(lines) + "\n"


def secret_text(secret: dict[str, Any] | None, key: str) -> str | None:
    raw = ((secret or {}).get("data") or {}).get(key)
    return base64.b64decode(raw).decode() if raw is not None else None


def build_secret(metadata: dict[str, Any], key: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {key: base64.b64encode(value.encode()).decode()},
    }
