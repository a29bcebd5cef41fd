"""`saigon-agent fetch-model`: the base model's init container.

Fetches a SaigonModel's spec.baseModel (an https or S3 tar archive, or a Hugging Face revision)
through the agent's download guard, verifies its sha256, and leaves it in `<cache>/<sha256>/`,
where the runtime container reads it. The directory appears by one rename after verification, so
its presence (and the marker file in it) means verified: a pod restarting on the same emptyDir,
and every replica sharing one ReadWriteMany claim, reuse it without fetching again. Replicas
sharing a claim take a lock on it, so one fetches while the others wait and then reuse it.

Only model files are written: *.safetensors weights, JSON configs, tokenizer files (*.json,
*.txt, *.model, *.tiktoken) and chat templates (*.jinja). Pickle weights (*.bin, *.pt, ...) are
never unpacked; links and devices in an archive are refused.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import shutil
import tarfile
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, ValidationError
from saigon_contract.agent_env import FETCH_MODEL_ENV as E
from saigon_contract.layout import fsync_dir
from saigon_contract.specs import AdapterSource, HuggingFaceSource, S3Source

from saigon_agent import artifact, s3
from saigon_agent.config import FetchLimits, WebIdentityConfig, fetch_limits_from_env
from saigon_agent.errors import DigestMismatch, InvalidArtifact, SyncError, TooLarge
from saigon_agent.fetch import Fetcher
from saigon_agent.sts import WebIdentityCredentials

log = logging.getLogger("saigon_agent.fetch_model")

MODEL_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".tiktoken", ".jinja")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MARKER = ".saigon-model.json"
MAX_MODEL_MEMBERS = 100_000
DEFAULT_MAX_BYTES = 1 << 40  # 1 TiB; the cache's sizeLimit is the real bound
DEFAULT_TIMEOUT_S = 24 * 3600.0  # a stalled transfer fails after 60 s without data anyway


@dataclass(frozen=True)
class FetchModelConfig:
    source: AdapterSource
    sha256: str
    cache_dir: Path
    limits: FetchLimits
    web_identity: WebIdentityConfig | None = None
    s3_keys: s3.Credentials | None = None
    hf_token: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FetchModelConfig:
        missing = [name for name in (E.SOURCE, E.SHA256, E.CACHE_DIR) if not env.get(name)]
        if missing:
            raise ValueError(f"missing environment: {', '.join(missing)}")
        try:
            source = AdapterSource.model_validate_json(env[E.SOURCE])
        except ValidationError as exc:
            raise ValueError(f"{E.SOURCE}: {exc.errors()[0]['msg']}") from None
        if not source.is_remote:
            raise ValueError(f"{E.SOURCE}: a base model is fetched from https, s3 or huggingFace")
        sha = env[E.SHA256].strip().lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError(f"{E.SHA256}: not a hex sha256")
        try:
            max_bytes = int(env.get(E.MAX_BYTES) or DEFAULT_MAX_BYTES)
        except ValueError:
            raise ValueError(f"{E.MAX_BYTES}: not a whole number") from None
        keys = None
        if env.get(E.AWS_ACCESS_KEY_ID) and env.get(E.AWS_SECRET_ACCESS_KEY):
            keys = s3.Credentials(
                env[E.AWS_ACCESS_KEY_ID], env[E.AWS_SECRET_ACCESS_KEY], env.get(E.AWS_SESSION_TOKEN) or None
            )
        return cls(
            source=source,
            sha256=sha,
            cache_dir=Path(env[E.CACHE_DIR]),
            limits=fetch_limits_from_env(env, max_bytes=max_bytes, timeout_s=DEFAULT_TIMEOUT_S),
            web_identity=WebIdentityConfig.from_env(env),
            s3_keys=keys,
            hf_token=env.get(E.HF_TOKEN) or None,
        )


def is_model_file(name: str) -> bool:
    return name.endswith(MODEL_SUFFIXES)


def verified(directory: Path, sha256: str) -> bool:
    """Whether `directory` holds a model this command verified against `sha256`."""
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("sha256") == sha256


def model_digest(directory: Path) -> str:
    """The digest of a model directory as the huggingFace source computes it: the manifest of its
    top-level model files (`saigon-agent digest --model DIR`)."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.is_symlink() and is_model_file(p.name))
    return artifact.manifest_digest({p.name: artifact.file_sha256(p) for p in files})


async def fetch_model(config: FetchModelConfig) -> Path:
    """Makes `<cache>/<sha256>/` hold the verified model; returns it."""
    target = config.cache_dir / config.sha256
    if verified(target, config.sha256):
        log.info("base model %s is already in the cache", config.sha256[:12])
        return target
    config.cache_dir.mkdir(parents=True, exist_ok=True)
    async with CacheLock(config.cache_dir):
        if verified(target, config.sha256):  # another replica filled the shared cache meanwhile
            log.info("base model %s was fetched by another pod", config.sha256[:12])
            return target
        staging = config.cache_dir / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        fetcher = Fetcher(config.limits)
        try:
            digest = await _fill(config, fetcher, staging)
            if digest != config.sha256:
                raise DigestMismatch(
                    f"the base model's sha256 is {digest}, spec.baseModel.sha256 asks for {config.sha256}"
                )
            await asyncio.to_thread(_check_model, staging)
            marker = {"sha256": config.sha256, "source": config.source.kind}
            (staging / MARKER).write_text(json.dumps(marker))
            await asyncio.to_thread(_commit, staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            await fetcher.close()
    log.info("base model %s fetched and verified", config.sha256[:12])
    return target


class CacheLock:
    """An exclusive lock on the cache directory (waited for off the event loop). Whoever holds it
    removes what a killed fetch left behind, since no other fetch can be running."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.fd = -1

    async def __aenter__(self) -> None:
        self.fd = os.open(self.cache_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another pod is fetching into this cache; waiting for it")
            await asyncio.to_thread(fcntl.flock, self.fd, fcntl.LOCK_EX)
        except OSError as exc:  # a filesystem without locks: fetch anyway, the rename keeps it safe
            log.warning("cannot lock the cache (%s); fetching without the lock", exc.strerror)
            return
        for leftover in self.cache_dir.glob(".staging-*"):
            log.info("removing %s, left by an interrupted fetch", leftover.name)
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

    async def __aexit__(self, *exc: object) -> None:
        os.close(self.fd)  # releases the lock


def _commit(staging: Path, target: Path) -> None:
    artifact.fsync_tree(staging)
    if target.exists():  # left by a fetch without the lock, or unverified: replace it
        shutil.rmtree(target)
    os.rename(staging, target)
    fsync_dir(target.parent)


async def _fill(config: FetchModelConfig, fetcher: Fetcher, staging: Path) -> str:
    source = config.source
    if source.https is not None:
        return await _from_archive(fetcher, config.limits, staging, source.https.url, None)
    if source.s3 is not None:
        creds = await _s3_credentials(config, fetcher, source.s3)
        url, headers = s3.signed_get(source.s3.endpoint, source.s3.bucket, source.s3.key, source.s3.region, creds)
        return await _from_archive(fetcher, config.limits, staging, url, headers)
    assert source.hugging_face is not None
    return await _from_hugging_face(fetcher, config, staging, source.hugging_face)


async def _s3_credentials(config: FetchModelConfig, fetcher: Fetcher, source: S3Source) -> s3.Credentials:
    if config.s3_keys is not None:
        return config.s3_keys
    if config.web_identity is not None:
        return await WebIdentityCredentials(config.web_identity, fetcher, session_name="saigon-fetch-model").get()
    raise SyncError(
        "no S3 credentials: set spec.baseModel.s3.credentialsSecretRef or spec.downloads.webIdentity",
        reason="CredentialsInvalid",
    )


async def _from_archive(
    fetcher: Fetcher, limits: FetchLimits, staging: Path, url: str, headers: dict[str, str] | None
) -> str:
    download = staging.parent / f"{staging.name}.download"
    try:
        got = await fetcher.download(url, download, headers=headers)
        log.info("downloaded %d bytes; unpacking", got.size)
        await asyncio.to_thread(unpack_model, download, staging, max_bytes=limits.max_bytes)
    finally:
        download.unlink(missing_ok=True)
    return got.sha256


def _member_path(name: str) -> PurePosixPath | None:
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts:
        return None
    if name.startswith("/") or ".." in parts:
        raise InvalidArtifact(f"{name[:200]!r} in the archive leads outside the model directory")
    return PurePosixPath(*parts)


def unpack_model(archive: Path, dest: Path, *, max_bytes: int) -> None:
    """Writes the model files of a tar archive into `dest`; a single top directory is stripped."""
    total = 0
    skipped: list[str] = []
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MODEL_MEMBERS:
                    raise InvalidArtifact(f"the archive holds more than {MAX_MODEL_MEMBERS} members")
                relative = _member_path(member.name)
                if relative is None or member.isdir():
                    continue
                if member.issym() or member.islnk():
                    raise InvalidArtifact(f"{member.name[:200]} is a link (archive the files, e.g. tar -h)")
                if not member.isreg():
                    raise InvalidArtifact(f"{member.name[:200]} is not a regular file")
                if not is_model_file(relative.name):
                    skipped.append(relative.name)
                    continue
                total += member.size
                if total > max_bytes:
                    raise TooLarge(f"the archive unpacks to more than {max_bytes} bytes")
                out = dest.joinpath(*relative.parts)
                if out.exists():
                    raise InvalidArtifact(f"the archive holds {relative} more than once")
                out.parent.mkdir(parents=True, exist_ok=True)
                stream = tar.extractfile(member)
                if stream is None:
                    raise InvalidArtifact(f"cannot read {member.name[:200]} from the archive")
                with stream, out.open("wb") as sink:
                    shutil.copyfileobj(stream, sink, 1 << 20)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise InvalidArtifact(f"not a readable tar archive: {exc}") from None
    pickles = sorted({name for name in skipped if name.endswith(PICKLE_SUFFIXES)})
    if pickles:
        log.info("skipped pickle files (never unpacked): %s", ", ".join(pickles[:10]))
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir():  # <model>/config.json ... -> config.json ...
        inner = entries[0]
        for child in list(inner.iterdir()):
            child.rename(dest / child.name)
        inner.rmdir()


def _check_model(directory: Path) -> None:
    if not (directory / "config.json").is_file():
        raise InvalidArtifact("the base model has no config.json at its top level")
    weights = sorted(directory.glob("*.safetensors"))
    if not weights:
        raise InvalidArtifact("the base model has no *.safetensors weights (pickle formats are never loaded)")
    for path in weights:
        artifact.validate_safetensors(path)


class _Sibling(BaseModel):
    model_config = ConfigDict(extra="ignore")
    rfilename: str


class _RepoInfo(BaseModel):
    """The part of the Hub's /api/models/<repo>/revision/<rev> answer used here."""

    model_config = ConfigDict(extra="ignore")
    siblings: list[_Sibling]


async def _from_hugging_face(
    fetcher: Fetcher, config: FetchModelConfig, staging: Path, source: HuggingFaceSource
) -> str:
    base = source.endpoint.rstrip("/")
    repo = "/".join(quote(part, safe="") for part in source.repo.split("/"))
    auth = {"Authorization": f"Bearer {config.hf_token}"} if config.hf_token else {}
    listing = await fetcher.get_small(f"{base}/api/models/{repo}/revision/{source.revision}", headers=auth)
    try:
        info = _RepoInfo.model_validate_json(listing)
    except ValidationError:
        raise InvalidArtifact(f"the Hub's file list for {source.repo}@{source.revision} is not readable") from None
    names = sorted(
        {
            s.rfilename
            for s in info.siblings
            if is_model_file(s.rfilename)
            and "/" not in s.rfilename
            and "\\" not in s.rfilename
            and not s.rfilename.startswith(".")
        }
    )
    if not any(name.endswith(".safetensors") for name in names):
        raise InvalidArtifact(f"{source.repo}@{source.revision} has no top-level *.safetensors weights")
    digests: dict[str, str] = {}
    total = 0
    for name in names:
        url = f"{base}/{repo}/resolve/{source.revision}/{quote(name)}"
        # The token goes to the Hub only: the download drops it on a redirect to the CDN.
        got = await fetcher.download(url, staging / name, headers=auth)
        total += got.size
        if total > config.limits.max_bytes:
            raise TooLarge(f"the model's files exceed {config.limits.max_bytes} bytes")
        digests[name] = got.sha256
        log.info("fetched %s (%d bytes)", name, got.size)
    return artifact.manifest_digest(digests)


def run(env: Mapping[str, str]) -> int:
    """The command's body: 0 when the model is in place, 1 (with the cause on stderr) otherwise."""
    config = FetchModelConfig.from_env(env)
    try:
        path = asyncio.run(fetch_model(config))
    except SyncError as exc:
        log.error("base model not fetched: %s: %s", exc.reason, exc.message)
        return 1
    except OSError as exc:  # the cache volume: full, read-only, not ours
        log.error(
            "base model not fetched: CacheError: %s: %s (the cache must hold the archive and the model "
            "while unpacking, and be writable by UID %d)",
            exc.filename or config.cache_dir,
            exc.strerror or exc,
            os.getuid(),
        )
        return 1
    log.info("base model ready in %s", path)
    return 0
