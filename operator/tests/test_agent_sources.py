"""From a target's source to a verified version directory: https, pvc, Hugging Face."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest
from agent_support import TlsFiles, adapter_archive, https_server, make_tls, write_adapter
from aiohttp import web
from saigon_agent import artifact
from saigon_agent.config import FetchLimits
from saigon_agent.errors import DigestMismatch, InvalidArtifact, SourceRejected, SyncError
from saigon_agent.fetch import Fetcher
from saigon_agent.sources import Materializer
from saigon_agent.store import AdapterStore
from saigon_contract.specs import parse_target

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    return write_adapter(tmp_path / "adapter", seed=5)


def materializer(tmp_path: Path, tls: TlsFiles | None = None) -> Materializer:
    limits = FetchLimits(
        allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),), ca_bundle=tls.cert if tls else None, timeout_s=10
    )
    return Materializer(AdapterStore(tmp_path / "adapters"), Fetcher(limits), limits, tmp_path / "sources")


def target(version: str, source: dict[str, Any], sha256: str | None = None) -> Any:
    raw: dict[str, Any] = {"version": version, "source": source}
    if sha256:
        raw["sha256"] = sha256
    return parse_target(raw)


def serve_bytes(data: bytes):  # type: ignore[no-untyped-def]
    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=data)

    return handler


async def test_https_archive_is_verified_and_installed(tmp_path: Path, tls: TlsFiles, adapter: Path) -> None:
    data = adapter_archive(adapter, gz=True)
    digest = hashlib.sha256(data).hexdigest()
    m = materializer(tmp_path, tls)
    async with https_server(tls, {"/a.tgz": serve_bytes(data)}) as base:
        try:
            t = target("v1", {"https": {"url": f"{base}/a.tgz"}}, digest)
            first = await m.install("user_42", t)
            again = await m.install("user_42", t)
        finally:
            await m.fetcher.close()
    assert first.fetched and not again.fetched  # immutable versions are fetched once
    assert first.digest == digest and first.path == tmp_path / "adapters" / "user_42" / "v1"
    assert (first.path / "adapter_model.safetensors").read_bytes() == (
        adapter / "adapter_model.safetensors"
    ).read_bytes()


async def test_wrong_digest_leaves_nothing_behind(tmp_path: Path, tls: TlsFiles, adapter: Path) -> None:
    data = adapter_archive(adapter)
    m = materializer(tmp_path, tls)
    async with https_server(tls, {"/a.tar": serve_bytes(data)}) as base:
        try:
            with pytest.raises(DigestMismatch, match=hashlib.sha256(data).hexdigest()):
                await m.install("user_42", target("v1", {"https": {"url": f"{base}/a.tar"}}, "0" * 64))
        finally:
            await m.fetcher.close()
    assert not (tmp_path / "adapters" / "user_42").exists()  # not even an empty directory for readers to list


async def test_corrupt_weights_with_a_matching_digest_are_still_refused(
    tmp_path: Path, tls: TlsFiles, adapter: Path
) -> None:
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    data = adapter_archive(adapter)
    m = materializer(tmp_path, tls)
    async with https_server(tls, {"/a.tar": serve_bytes(data)}) as base:
        try:
            with pytest.raises(InvalidArtifact):
                await m.install(
                    "user_42", target("v1", {"https": {"url": f"{base}/a.tar"}}, hashlib.sha256(data).hexdigest())
                )
        finally:
            await m.fetcher.close()
    assert AdapterStore(tmp_path / "adapters").versions("user_42") == []


async def test_pvc_directory_and_archive(tmp_path: Path, adapter: Path) -> None:
    claim = tmp_path / "sources" / "models-pvc"
    (claim / "team").mkdir(parents=True)
    write_adapter(claim / "team" / "dir-adapter", seed=8)
    (claim / "team" / "a.tar").write_bytes(adapter_archive(adapter))
    m = materializer(tmp_path)
    by_dir = await m.install(
        "domain_law", target("v1", {"pvc": {"claimName": "models-pvc", "path": "team/dir-adapter"}})
    )
    assert by_dir.digest == artifact.directory_digest(claim / "team" / "dir-adapter")
    archive_digest = hashlib.sha256((claim / "team" / "a.tar").read_bytes()).hexdigest()
    by_tar = await m.install(
        "domain_law", target("v2", {"pvc": {"claimName": "models-pvc", "path": "team/a.tar"}}, archive_digest)
    )
    assert by_tar.digest == archive_digest


async def test_pvc_paths_cannot_escape_their_claim(tmp_path: Path, adapter: Path) -> None:
    claim = tmp_path / "sources" / "models-pvc"
    claim.mkdir(parents=True)
    os.symlink(adapter, claim / "escape")
    m = materializer(tmp_path)
    with pytest.raises(SourceRejected, match="outside claim"):
        await m.install("user_1", target("v1", {"pvc": {"claimName": "models-pvc", "path": "escape"}}))
    with pytest.raises(SyncError, match="not mounted") as info:
        await m.install("user_1", target("v1", {"pvc": {"claimName": "other", "path": "x"}}))
    assert info.value.reason == "SourceNotMounted"
    with pytest.raises(SyncError, match="does not exist") as info:
        await m.install("user_1", target("v1", {"pvc": {"claimName": "models-pvc", "path": "missing.tar"}}))
    assert info.value.reason == "SourceNotFound"


async def test_hugging_face_revision_is_fetched_file_by_file(tmp_path: Path, tls: TlsFiles, adapter: Path) -> None:
    seen: list[str] = []

    async def resolve(request: web.Request) -> web.Response:
        seen.append(request.path)
        assert request.match_info["rev"] == REVISION
        return web.Response(body=(adapter / request.match_info["file"]).read_bytes())

    m = materializer(tmp_path, tls)
    async with https_server(tls, {"/org/lora/resolve/{rev}/{file}": resolve}) as base:
        try:
            source = {"huggingFace": {"repo": "org/lora", "revision": REVISION, "endpoint": base}}
            got = await m.install("global", target("v1", source, artifact.directory_digest(adapter)))
        finally:
            await m.fetcher.close()
    assert sorted(seen) == [f"/org/lora/resolve/{REVISION}/{n}" for n in sorted(artifact.ADAPTER_FILES)]
    assert got.digest == artifact.directory_digest(adapter)
