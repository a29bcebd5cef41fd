"""Inference credentials: `token=user_id` pairs, from SAIGON_INFERENCE_TOKENS (comma separated) and
from a file (one pair per line or comma separated, `#` comments) that is re-read when it changes.

The file is how Kubernetes rotates credentials without a rollout: the operator mounts a Secret,
the kubelet swaps the mounted files when the Secret changes, and the next request after the
swap (at most `recheck_s` later) sees the new set. A file that becomes unreadable or malformed
keeps the last good set (logged), so a bad edit never opens or locks the door.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from saigon_runtime.mesh.schema import InvalidUserId, validate_user_id

log = logging.getLogger(__name__)

MAX_TOKENS_FILE_BYTES = 4 << 20


class InvalidTokens(Exception):
    """Not a ValueError: the config loader quotes a ValueError's raw value, and this one is a secret."""


def parse_tokens(text: str, *, source: str = "SAIGON_INFERENCE_TOKENS") -> dict[str, str]:
    """{token: user id}. Entries are separated by commas or newlines; each is `token=user_id`."""
    tokens: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0] if line.lstrip().startswith("#") else line
        for item in line.split(","):
            item = item.strip()
            if not item:
                continue
            token, sep, user = item.partition("=")
            token, user = token.strip(), user.strip()
            where = f"{source} line {number}" if "\n" in text else source
            if not sep or not token or not user:
                # Never half-accepted: a bare token would silently grant nothing (or everything).
                raise InvalidTokens(f"{where}: every entry must be token=user_id")
            try:
                validate_user_id(user)
            except InvalidUserId:
                raise InvalidTokens(f"{where}: the user id of an entry is not a valid user id") from None
            tokens[token] = user
    return tokens


class TokenFile:
    """The credentials in one file, re-read when its (inode, size, mtime) changes."""

    def __init__(self, path: Path, *, recheck_s: float = 1.0) -> None:
        self.path = path
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._tokens: dict[str, str] = {}
        self._checked = 0.0
        self.reloads = 0
        self._load(strict=True)

    def tokens(self) -> Mapping[str, str]:
        now = time.monotonic()
        if now - self._checked >= self.recheck_s:
            with self._lock:
                if now - self._checked >= self.recheck_s:
                    self._checked = now
                    self._load(strict=False)
        return self._tokens

    def _load(self, *, strict: bool) -> None:
        try:
            info = os.stat(self.path)  # follows the kubelet's ..data symlink swap
            signature = (info.st_ino, info.st_size, info.st_mtime_ns)
            if signature == self._signature:
                return
            if info.st_size > MAX_TOKENS_FILE_BYTES:
                raise InvalidTokens(f"the tokens file is over {MAX_TOKENS_FILE_BYTES} bytes")
            tokens = parse_tokens(self.path.read_text(encoding="utf-8"), source="the tokens file")
        except (OSError, UnicodeDecodeError, InvalidTokens) as exc:
            if strict:
                raise InvalidTokens(f"cannot read the inference tokens file: {exc}") from None
            log.warning("inference tokens file not reloaded (%s); keeping the previous credentials", type(exc).__name__)
            return
        self._tokens, self._signature = tokens, signature
        self.reloads += 1
        if self.reloads > 1:
            log.info("inference tokens reloaded: %d credentials", len(tokens))
