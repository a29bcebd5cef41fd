"""User ids out of logs and metric labels: a user id (also inside a `user_<id>` adapter name) is
shown as an HMAC-SHA256 under a key, never raw. The audit log keys it with its per-install salt;
logs and metric labels with a key drawn per process (stable while the process runs)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

USER_ADAPTER_PREFIX = "user_"
# Enough to tell adapters apart in a log or a label set; the audit log keeps the full digest.
SHORT_DIGEST_CHARS = 12
_PROCESS_KEY = secrets.token_bytes(32)


def user_key(user_id: str, key: bytes) -> str:
    return hmac.new(key, user_id.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def adapter_key(adapter: str, key: bytes, *, chars: int | None = None) -> str:
    """`user_<id>` becomes `user_<digest of id>`; shared adapters (global, domain_*, named) stay as they are."""
    if not adapter.startswith(USER_ADAPTER_PREFIX):
        return adapter
    return USER_ADAPTER_PREFIX + user_key(adapter.removeprefix(USER_ADAPTER_PREFIX), key)[:chars]


def shown(adapter: str) -> str:
    """How an adapter name appears in a log line or a metric label of this process."""
    return adapter_key(adapter, _PROCESS_KEY, chars=SHORT_DIGEST_CHARS)
