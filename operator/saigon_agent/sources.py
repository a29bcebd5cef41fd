"""Turning a target's source into a verified version directory in the store."""

from __future__ import annotations

import base64
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from saigon_contract.background import BackgroundPool
from saigon_contract.specs import HuggingFaceSource, PvcSource, S3Source, Target

from saigon_agent import artifact, s3
from saigon_agent.config import FetchLimits
from saigon_agent.errors import DigestMismatch, SourceRejected, SyncError
from saigon_agent.fetch import Downloaded, Fetcher
from saigon_agent.metrics import OK, AgentMetrics
from saigon_agent.store import AdapterStore
from saigon_agent.sts import WebIdentityCredentials

# Reads a Secret's data (base64-decoded) by name; the agent passes its API client.
SecretReader = Callable[[str], Awaitable[dict[str, bytes]]]


@dataclass(frozen=True)
class Installed:
    path: Path
    digest: str
    fetched: bool  # False when the version was already on disk


class Materializer:
    def __init__(
        self,
        store: AdapterStore,
        fetcher: Fetcher,
        limits: FetchLimits,
        sources_root: Path,
        read_secret: SecretReader | None = None,
        *,
        web_identity: WebIdentityCredentials | None = None,
        metrics: AgentMetrics | None = None,
        background: BackgroundPool | None = None,
    ) -> None:
        """`background`: where copying, unpacking, hashing and fsyncing run (default: a pool of 4)."""
        self.metrics = metrics or AgentMetrics()
        self.background = background or BackgroundPool(4, "saigon-agent-io")
        self.store = store
        self.fetcher = fetcher
        self.limits = limits
        self.sources_root = sources_root
        self.read_secret = read_secret
        self.web_identity = web_identity

    async def install(self, name: str, target: Target) -> Installed:
        """Makes `<name>/<target.version>` exist with the target's content, verified."""
        existing = self.store.installed_digest(name, target.version)
        if existing is not None and (target.sha256 is None or existing == target.sha256):
            return Installed(self.store.version_dir(name, target.version), existing, fetched=False)
        staging = self.store.stage(name, target.version)
        kind = target.source.kind
        try:
            digest = await self._fill(staging, target)
            if target.sha256 is not None and digest != target.sha256:
                raise DigestMismatch(f"artifact sha256 is {digest}, the spec asks for {target.sha256}")
            await self.background.run(artifact.validate, staging)
            path = await self.background.run(self.store.commit, name, target.version, staging, digest)
        except BaseException as exc:
            artifact.remove_tree(staging)
            self.store.drop_if_empty(name)
            if isinstance(exc, SyncError):
                self.metrics.download(name, kind, exc.reason)
            raise
        self.metrics.download(name, kind, OK)
        return Installed(path, digest, fetched=True)

    async def _download(self, url: str, dest: Path, source: str, headers: dict[str, str] | None = None) -> Downloaded:
        got = await self.fetcher.download(url, dest, headers=headers)
        self.metrics.downloaded_bytes(source, got.size)
        return got

    async def _fill(self, staging: Path, target: Target) -> str:
        source = target.source
        if source.https is not None:
            return await self._from_archive_url(staging, source.https.url, "https")
        if source.pvc is not None:
            return await self.background.run(self._from_pvc, staging, source.pvc)
        if source.hugging_face is not None:
            return await self._from_hugging_face(staging, source.hugging_face)
        assert source.s3 is not None
        return await self._from_s3(staging, source.s3)

    async def _from_archive_url(
        self, staging: Path, url: str, source: str, headers: dict[str, str] | None = None
    ) -> str:
        download = staging / ".download"
        got = await self._download(url, download, source, headers)
        try:
            await self.background.run(
                functools.partial(artifact.unpack, max_bytes=self.limits.max_bytes), download, staging
            )
        finally:
            download.unlink(missing_ok=True)
        return got.sha256

    def _from_pvc(self, staging: Path, source: PvcSource) -> str:
        claim_root = (self.sources_root / source.claim_name).resolve()
        if not claim_root.is_dir():
            raise SyncError(
                f"claim {source.claim_name} is not mounted in this pod "
                "(list it in the model's spec.adapterSources.pvcs)",
                reason="SourceNotMounted",
            )
        path = (claim_root / source.path).resolve()
        # resolve() follows symlinks, so this also catches a link pointing out of the claim.
        if not path.is_relative_to(claim_root):
            raise SourceRejected(f"{source.path} leads outside claim {source.claim_name}")
        if path.is_dir():
            return artifact.copy_directory(path, staging, max_bytes=self.limits.max_bytes)
        if not path.is_file():
            raise SyncError(f"{source.path} does not exist on claim {source.claim_name}", reason="SourceNotFound")
        if path.stat().st_size > self.limits.max_bytes:
            raise artifact.TooLarge(f"{source.path} is over the {self.limits.max_bytes}-byte limit")
        digest = artifact.file_sha256(path)
        artifact.unpack(path, staging, max_bytes=self.limits.max_bytes)
        return digest

    async def _from_hugging_face(self, staging: Path, source: HuggingFaceSource) -> str:
        base = source.endpoint.rstrip("/")
        repo = "/".join(quote(part, safe="") for part in source.repo.split("/"))
        headers = await self._hugging_face_auth(source)
        digests = {}
        for name in artifact.ADAPTER_FILES:
            url = f"{base}/{repo}/resolve/{source.revision}/{name}"
            # The token goes to the Hub only: a redirect (to its CDN) drops it.
            got = await self._download(url, staging / name, "huggingFace", headers)
            digests[name] = got.sha256
        return artifact.manifest_digest(digests)

    async def _hugging_face_auth(self, source: HuggingFaceSource) -> dict[str, str]:
        ref = source.token_secret_ref
        if ref is None:
            return {}
        if self.read_secret is None:
            raise SyncError("this agent cannot read credential secrets", reason="SourceRejected")
        token = (await self.read_secret(ref.name)).get(ref.key)
        if not token:
            raise SyncError(f"secret {ref.name} lacks {ref.key}", reason="CredentialsInvalid")
        return {"Authorization": f"Bearer {token.decode().strip()}"}

    async def _from_s3(self, staging: Path, source: S3Source) -> str:
        creds = await self._s3_credentials(source)
        url, headers = s3.signed_get(source.endpoint, source.bucket, source.key, source.region, creds)
        return await self._from_archive_url(staging, url, "s3", headers)

    async def _s3_credentials(self, source: S3Source) -> s3.Credentials:
        ref = source.credentials_secret_ref
        if ref is None:
            if self.web_identity is None:
                raise SyncError(
                    "the source names no credentialsSecretRef and this pod has no web identity "
                    "(set the SaigonModel's spec.downloads.webIdentity)",
                    reason="CredentialsInvalid",
                )
            return await self.web_identity.get()
        if self.read_secret is None:
            raise SyncError("this agent cannot read credential secrets", reason="SourceRejected")
        return secret_credentials(ref.name, await self.read_secret(ref.name))


def secret_credentials(secret: str, data: Mapping[str, bytes]) -> s3.Credentials:
    """S3 keys from a Secret's data: accessKeyId, secretAccessKey and optionally sessionToken."""
    try:
        return s3.Credentials(
            access_key=data["accessKeyId"].decode(),
            secret_key=data["secretAccessKey"].decode(),
            session_token=data["sessionToken"].decode() if "sessionToken" in data else None,
        )
    except KeyError as exc:
        raise SyncError(f"secret {secret} lacks {exc.args[0]}", reason="CredentialsInvalid") from None


def decode_secret_data(secret: dict[str, object]) -> dict[str, bytes]:
    data = secret.get("data") or {}
    if not isinstance(data, dict):
        return {}
    return {str(k): base64.b64decode(str(v)) for k, v in data.items()}
