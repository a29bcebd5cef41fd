"""S3 credentials from a web identity: the pod's ServiceAccount token exchanged at an STS.

AssumeRoleWithWebIdentity needs no signature (the token is the proof), so any STS speaking the
AWS query API works: AWS STS for IRSA, or an S3-compatible store's own (MinIO's). The session
keys are kept until shortly before they expire; the token file is re-read at every exchange,
since the kubelet rotates it.
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from datetime import datetime

from saigon_agent import s3
from saigon_agent.config import WebIdentityConfig
from saigon_agent.errors import SyncError
from saigon_agent.fetch import Fetcher

STS_VERSION = "2011-06-15"
# Renewed this long before the STS says the keys expire.
REFRESH_MARGIN_S = 300.0
SESSION_SECONDS = 3600


class CredentialsInvalid(SyncError):
    reason = "CredentialsInvalid"


class WebIdentityCredentials:
    def __init__(self, config: WebIdentityConfig, fetcher: Fetcher, *, session_name: str = "saigon-agent") -> None:
        self.config = config
        self.fetcher = fetcher
        self.session_name = session_name[:64]
        self._cached: tuple[s3.Credentials, float] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> s3.Credentials:
        async with self._lock:
            if self._cached is not None and time.time() < self._cached[1] - REFRESH_MARGIN_S:
                return self._cached[0]
            creds, expires = await self._assume()
            self._cached = (creds, expires)
            return creds

    async def _assume(self) -> tuple[s3.Credentials, float]:
        try:
            token = (await asyncio.to_thread(self.config.token_file.read_text)).strip()
        except OSError as exc:
            raise CredentialsInvalid(
                f"cannot read the web identity token {self.config.token_file}: {exc.strerror}", transient=True
            ) from None
        form = {
            "Action": "AssumeRoleWithWebIdentity",
            "Version": STS_VERSION,
            "RoleArn": self.config.role_arn,
            "RoleSessionName": self.session_name,
            "WebIdentityToken": token,
            "DurationSeconds": str(SESSION_SECONDS),
        }
        status, body = await self.fetcher.post_form(self.config.sts_endpoint + "/", form)
        if status != 200:
            code, message = _sts_error(body)
            raise CredentialsInvalid(
                f"STS {self.config.sts_endpoint} refused AssumeRoleWithWebIdentity for {self.config.role_arn}: "
                f"HTTP {status} {code}: {message}",
                transient=status >= 500 or status == 429,
            )
        return parse_assume_role_response(body)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(root: ET.Element, name: str) -> str | None:
    for element in root.iter():
        if _local(element.tag) == name:
            return (element.text or "").strip()
    return None


def _parse(body: bytes) -> ET.Element:
    # No DOCTYPE means no entity declarations: nothing for an entity expansion attack to use.
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise CredentialsInvalid("the STS answered with a DOCTYPE (refused)")
    try:
        return ET.fromstring(body)  # noqa: S314 (checked above)
    except ET.ParseError as exc:
        raise CredentialsInvalid(f"the STS answered with malformed XML: {exc}", transient=True) from None


def parse_assume_role_response(body: bytes) -> tuple[s3.Credentials, float]:
    """(credentials, expiry as a Unix time) from an AssumeRoleWithWebIdentityResponse."""
    root = _parse(body)
    key, secret, session = (_find(root, n) for n in ("AccessKeyId", "SecretAccessKey", "SessionToken"))
    expiration = _find(root, "Expiration")
    if not key or not secret or not session or not expiration:
        raise CredentialsInvalid("the STS response lacks AccessKeyId, SecretAccessKey, SessionToken or Expiration")
    try:
        expires = datetime.fromisoformat(expiration.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise CredentialsInvalid(f"the STS response's Expiration {expiration[:40]!r} is not a time") from None
    return s3.Credentials(access_key=key, secret_key=secret, session_token=session), expires


def _sts_error(body: bytes) -> tuple[str, str]:
    try:
        root = _parse(body)
    except CredentialsInvalid:
        return "Unknown", body[:200].decode("utf-8", "replace")
    return _find(root, "Code") or "Unknown", (_find(root, "Message") or "")[:500]
