"""`saigon-agent fetch-model`, S3 web identity and the opt-in proxy, against real servers on
127.0.0.1: an aiohttp TLS server under a CA the test makes, an STS speaking the AWS query API's
XML, and a CONNECT proxy."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import sys
from pathlib import Path

import pytest
from agent_support import TlsFiles, connect_proxy, https_server, make_tls, safetensors_bytes, tar_bytes
from aiohttp import web
from saigon_agent import artifact
from saigon_agent.config import FetchLimits, WebIdentityConfig
from saigon_agent.errors import DigestMismatch, FetchFailed, InvalidArtifact, SourceRejected
from saigon_agent.fetch import Fetcher
from saigon_agent.model_fetch import MARKER, FetchModelConfig, fetch_model, model_digest
from saigon_agent.sources import Materializer
from saigon_agent.store import AdapterStore
from saigon_agent.sts import CredentialsInvalid, WebIdentityCredentials
from saigon_contract.agent_env import ENV
from saigon_contract.agent_env import FETCH_MODEL_ENV as E
from saigon_contract.specs import AdapterSource, parse_target

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
REVISION = "0123456789abcdef0123456789abcdef01234567"
MODEL_FILES = {
    "config.json": json.dumps({"model_type": "llama", "hidden_size": 64}).encode(),
    "tokenizer.json": b'{"version": "1.0"}',
    "model.safetensors": safetensors_bytes({"embed.weight": (64, 16)}),
}
SKIPPED = {"pytorch_model.bin": b"\x80\x04pickle", "README.md": b"# llama"}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


def limits(tls: TlsFiles, **overrides: object) -> FetchLimits:
    options: dict[str, object] = {"allowed_networks": LOOPBACK, "ca_bundle": tls.cert, "timeout_s": 30.0}
    options.update(overrides)
    return FetchLimits(**options)  # type: ignore[arg-type]


def config(tls: TlsFiles, cache: Path, source: dict[str, object], sha: str, **extra: object) -> FetchModelConfig:
    return FetchModelConfig(
        source=AdapterSource.model_validate(source), sha256=sha, cache_dir=cache, limits=limits(tls), **extra
    )  # type: ignore[arg-type]


def counted(body: bytes, hits: list[str]):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=body)

    return handler


ARCHIVE = tar_bytes({f"llama/{name}": data for name, data in {**MODEL_FILES, **SKIPPED}.items()}, gz=True)
ARCHIVE_SHA = hashlib.sha256(ARCHIVE).hexdigest()


async def test_an_https_archive_is_fetched_verified_and_reused(tls: TlsFiles, tmp_path: Path) -> None:
    hits: list[str] = []
    async with https_server(tls, {"/llama.tar.gz": counted(ARCHIVE, hits)}) as base:
        cfg = config(tls, tmp_path / "cache", {"https": {"url": f"{base}/llama.tar.gz"}}, ARCHIVE_SHA)
        path = await fetch_model(cfg)
        assert path == tmp_path / "cache" / ARCHIVE_SHA
        # The top directory is stripped; pickle weights and other files are never written.
        assert sorted(p.name for p in path.iterdir()) == sorted([*MODEL_FILES, MARKER])
        assert (path / "model.safetensors").read_bytes() == MODEL_FILES["model.safetensors"]
        assert json.loads((path / MARKER).read_text())["sha256"] == ARCHIVE_SHA
        # A restart (same emptyDir) or another replica (same claim) reuses it without a download.
        assert await fetch_model(cfg) == path
    assert hits == ["/llama.tar.gz"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".lock", ARCHIVE_SHA]


async def test_replicas_sharing_a_cache_fetch_once(tls: TlsFiles, tmp_path: Path) -> None:
    hits: list[str] = []

    async def slow_archive(request: web.Request) -> web.Response:
        hits.append(request.path)
        await asyncio.sleep(0.3)  # the second replica arrives while the first still downloads
        return web.Response(body=ARCHIVE)

    async with https_server(tls, {"/llama.tar.gz": slow_archive}) as base:
        cfg = config(tls, tmp_path / "shared", {"https": {"url": f"{base}/llama.tar.gz"}}, ARCHIVE_SHA)
        first, second = await asyncio.gather(fetch_model(cfg), fetch_model(cfg))
    assert first == second and len(hits) == 1


async def test_a_model_that_fails_verification_leaves_nothing_behind(tls: TlsFiles, tmp_path: Path) -> None:
    async with https_server(tls, {"/llama.tar.gz": counted(ARCHIVE, [])}) as base:
        cfg = config(tls, tmp_path / "cache", {"https": {"url": f"{base}/llama.tar.gz"}}, "d" * 64)
        with pytest.raises(DigestMismatch, match=f"sha256 is {ARCHIVE_SHA}, spec.baseModel.sha256 asks for d"):
            await fetch_model(cfg)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".lock"]


@pytest.mark.parametrize(
    ("files", "links", "message"),
    [
        ({"../etc/passwd": b"x", **MODEL_FILES}, None, "leads outside the model directory"),
        (MODEL_FILES, {"weights.safetensors": "/etc/shadow"}, "is a link"),
        ({"config.json": b"{}", "pytorch_model.bin": b"\x80\x04"}, None, "no \\*.safetensors weights"),
        ({"model.safetensors": MODEL_FILES["model.safetensors"]}, None, "no config.json"),
        ({"config.json": b"{}", "model.safetensors": b"\xff" * 16}, None, "impossible header length"),
    ],
)
async def test_unsafe_or_incomplete_archives_are_refused(
    tls: TlsFiles, tmp_path: Path, files: dict[str, bytes], links: dict[str, str] | None, message: str
) -> None:
    archive = tar_bytes(files, links=links)
    sha = hashlib.sha256(archive).hexdigest()
    async with https_server(tls, {"/m.tar": counted(archive, [])}) as base:
        with pytest.raises(InvalidArtifact, match=message):
            await fetch_model(config(tls, tmp_path / "cache", {"https": {"url": f"{base}/m.tar"}}, sha))
    assert not (tmp_path / "cache" / sha).exists()


async def test_the_init_container_exits_non_zero_naming_the_cause(tls: TlsFiles, tmp_path: Path) -> None:
    """What `kubectl describe pod` shows for a model that fails verification (the pod stays in Init)."""
    async with https_server(tls, {"/llama.tar.gz": counted(ARCHIVE, [])}) as base:
        env = {
            **os.environ,
            E.SOURCE: json.dumps({"https": {"url": f"{base}/llama.tar.gz"}}),
            E.SHA256: "e" * 64,
            E.CACHE_DIR: str(tmp_path / "cache"),
            ENV.ALLOWED_CIDRS: "127.0.0.0/8",
            ENV.CA_BUNDLE: str(tls.cert),
        }
        cli = [sys.executable, "-m", "saigon_agent.cli", "fetch-model"]
        proc = await asyncio.create_subprocess_exec(*cli, env=env, stderr=asyncio.subprocess.PIPE)
        _, stderr = await proc.communicate()
        assert proc.returncode == 1
        assert f"DigestMismatch: the base model's sha256 is {ARCHIVE_SHA}" in stderr.decode()
        env[E.SHA256] = ARCHIVE_SHA
        proc = await asyncio.create_subprocess_exec(*cli, env=env, stderr=asyncio.subprocess.PIPE)
        _, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()
        assert (tmp_path / "cache" / ARCHIVE_SHA / "config.json").is_file()
        # A configuration mistake is a named refusal, not a traceback.
        env[E.SOURCE] = json.dumps({"pvc": {"claimName": "c", "path": "m"}})
        proc = await asyncio.create_subprocess_exec(*cli, env=env, stderr=asyncio.subprocess.PIPE)
        _, stderr = await proc.communicate()
        assert proc.returncode == 2 and f"{E.SOURCE}: a base model is fetched from" in stderr.decode()
        assert b"Traceback" not in stderr


def hub(
    token: str | None, calls: list[tuple[str, str | None]], files: dict[str, bytes] | None = None
) -> dict[str, object]:
    """A Hugging Face Hub: the revision's file list, files that redirect to a CDN (as the Hub does)."""
    files = files or {**MODEL_FILES, **SKIPPED, ".gitattributes": b"*", "onnx/model.json": b"{}"}

    def authorized(request: web.Request) -> None:
        calls.append((request.path, request.headers.get("Authorization")))
        if token is not None and request.headers.get("Authorization") != f"Bearer {token}":
            raise web.HTTPUnauthorized()

    async def listing(request: web.Request) -> web.Response:
        authorized(request)
        return web.json_response({"id": "org/llama", "siblings": [{"rfilename": name} for name in files]})

    async def resolve(request: web.Request) -> web.Response:
        authorized(request)
        raise web.HTTPFound(f"/cdn/{request.match_info['name']}?signed=1")

    async def cdn(request: web.Request) -> web.Response:
        calls.append((request.path, request.headers.get("Authorization")))
        return web.Response(body=files[request.match_info["name"]])

    return {
        f"/api/models/org/llama/revision/{REVISION}": listing,
        f"/org/llama/resolve/{REVISION}/{{name}}": resolve,
        "/cdn/{name}": cdn,
    }


async def test_a_private_hugging_face_revision_is_fetched_with_the_token(tls: TlsFiles, tmp_path: Path) -> None:
    calls: list[tuple[str, str | None]] = []
    reference = tmp_path / "reference"
    reference.mkdir()
    for name, data in MODEL_FILES.items():
        (reference / name).write_bytes(data)
    sha = model_digest(reference)  # `saigon-agent digest --model DIR` on a local copy
    async with https_server(tls, hub("hf_secret", calls)) as base:  # type: ignore[arg-type]
        source = {"huggingFace": {"repo": "org/llama", "revision": REVISION, "endpoint": base}}
        path = await fetch_model(config(tls, tmp_path / "cache", source, sha, hf_token="hf_secret"))
        assert sorted(p.name for p in path.iterdir()) == sorted([*MODEL_FILES, MARKER])
        # The token reaches the Hub and never the CDN it redirects to.
        assert all(auth == "Bearer hf_secret" for p, auth in calls if not p.startswith("/cdn/"))
        assert all(auth is None for p, auth in calls if p.startswith("/cdn/"))
        assert not any("pytorch_model.bin" in p or "onnx" in p for p, _ in calls)
        # Without the token a private repository is a clear refusal.
        with pytest.raises(FetchFailed, match="HTTP 401"):
            await fetch_model(config(tls, tmp_path / "other", source, sha))


async def test_a_private_hugging_face_adapter_uses_the_token_secret(tls: TlsFiles, tmp_path: Path) -> None:
    files = {
        "adapter_config.json": b'{"peft_type": "LORA", "r": 4}',
        "adapter_model.safetensors": safetensors_bytes({"a": (4, 4)}),
    }
    calls: list[tuple[str, str | None]] = []
    secrets_read: list[str] = []

    async def read_secret(name: str) -> dict[str, bytes]:
        secrets_read.append(name)
        return {"token": b"hf_adapter\n"}

    sha = artifact.manifest_digest({n: hashlib.sha256(d).hexdigest() for n, d in files.items()})
    async with https_server(tls, hub("hf_adapter", calls, files)) as base:  # type: ignore[arg-type]
        fetcher = Fetcher(limits(tls))
        try:
            materializer = Materializer(
                AdapterStore(tmp_path / "adapters"), fetcher, limits(tls), tmp_path / "sources", read_secret
            )
            hf = {"repo": "org/llama", "revision": REVISION, "endpoint": base, "tokenSecretRef": {"name": "hf"}}
            target = parse_target({"version": "v1", "sha256": sha, "source": {"huggingFace": hf}})
            installed = await materializer.install("user_42", target)
        finally:
            await fetcher.close()
    assert installed.fetched and secrets_read == ["hf"]
    assert [auth for p, auth in calls if "/resolve/" in p] == ["Bearer hf_adapter"] * 2
    assert all(auth is None for p, auth in calls if p.startswith("/cdn/"))


def sts(role: str, expected_token: str, seen: list[dict[str, str]], *, expiration: str = "2099-01-01T00:00:00Z"):  # type: ignore[no-untyped-def]
    """AWS STS's AssumeRoleWithWebIdentity over the query API, answering its XML."""

    async def handler(request: web.Request) -> web.Response:
        form = dict(await request.post())
        seen.append({k: str(v) for k, v in form.items()})
        if form.get("WebIdentityToken") != expected_token or form.get("RoleArn") != role:
            body = (
                '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
                "<Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message>"
                "</Error></ErrorResponse>"
            )
            return web.Response(status=403, text=body, content_type="text/xml")
        body = f"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>ASIAWEBIDENTITY</AccessKeyId>
      <SecretAccessKey>web-secret</SecretAccessKey>
      <SessionToken>session-token-{len(seen)}</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"""
        return web.Response(text=body, content_type="text/xml")

    return handler


def s3_object(body: bytes, seen: list[dict[str, str]]):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if "Credential=ASIAWEBIDENTITY/" not in request.headers.get("Authorization", ""):
            return web.Response(status=403, text="<Error><Code>AccessDenied</Code></Error>")
        if not request.headers.get("x-amz-security-token", "").startswith("session-token-"):
            return web.Response(status=403, text="<Error><Code>InvalidToken</Code></Error>")
        return web.Response(body=body)

    return handler


async def test_s3_through_web_identity_signs_with_the_session_token(tls: TlsFiles, tmp_path: Path) -> None:
    role = "arn:aws:iam::123456789012:role/saigon"
    token_file = tmp_path / "token"
    token_file.write_text("projected-jwt\n")
    seen_sts: list[dict[str, str]] = []
    seen_s3: list[dict[str, str]] = []
    async with https_server(
        tls, {"/models/llama.tar.gz": s3_object(ARCHIVE, seen_s3)}, posts={"/": sts(role, "projected-jwt", seen_sts)}
    ) as base:
        identity = WebIdentityConfig(role, token_file, base)
        source = {"s3": {"endpoint": base, "bucket": "models", "key": "llama.tar.gz"}}
        path = await fetch_model(config(tls, tmp_path / "cache", source, ARCHIVE_SHA, web_identity=identity))
        assert (path / "config.json").is_file()
        assert seen_sts[0]["Action"] == "AssumeRoleWithWebIdentity" and seen_sts[0]["RoleArn"] == role
        assert seen_s3[0]["x-amz-security-token"] == "session-token-1"

        # Adapters use the same identity when their source names no Secret.
        adapter_dir = tmp_path / "adapter"
        adapter_dir.mkdir()
        (adapter_dir / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
        (adapter_dir / "adapter_model.safetensors").write_bytes(safetensors_bytes({"a": (4, 4)}))
        adapter_tar = tar_bytes({n: (adapter_dir / n).read_bytes() for n in artifact.ADAPTER_FILES})
        seen_s3.clear()
        fetcher = Fetcher(limits(tls))
        materializer = Materializer(
            AdapterStore(tmp_path / "adapters"),
            fetcher,
            limits(tls),
            tmp_path / "sources",
            web_identity=WebIdentityCredentials(identity, fetcher),
        )
        try:
            async with https_server(tls, {"/lora/u42.tar": s3_object(adapter_tar, seen_s3)}) as s3_base:
                target = parse_target(
                    {
                        "version": "v1",
                        "sha256": hashlib.sha256(adapter_tar).hexdigest(),
                        "source": {"s3": {"endpoint": s3_base, "bucket": "lora", "key": "u42.tar"}},
                    }
                )
                installed = await materializer.install("user_42", target)
                again = parse_target({**target.as_dict(), "version": "v2"})
                await materializer.install("user_42", again)
            assert installed.fetched and len(seen_sts) == 2  # the session keys were reused for v2
        finally:
            await fetcher.close()

        # A role the STS refuses: a named, permanent failure.
        refused = WebIdentityConfig("arn:aws:iam::123456789012:role/other", token_file, base)
        with pytest.raises(CredentialsInvalid, match="HTTP 403 AccessDenied: Not authorized") as info:
            await fetch_model(config(tls, tmp_path / "c2", source, ARCHIVE_SHA, web_identity=refused))
        assert info.value.transient is False


async def test_expiring_session_keys_are_renewed(tls: TlsFiles, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("jwt")
    seen: list[dict[str, str]] = []
    role = "arn:minio:iam:::role/saigon"
    async with https_server(tls, {}, posts={"/": sts(role, "jwt", seen, expiration="2000-01-01T00:00:00Z")}) as base:
        fetcher = Fetcher(limits(tls))
        try:
            provider = WebIdentityCredentials(WebIdentityConfig(role, token_file, base), fetcher)
            first, second = await provider.get(), await provider.get()
        finally:
            await fetcher.close()
    assert (first.session_token, second.session_token) == ("session-token-1", "session-token-2")


async def test_an_sts_answer_with_entities_is_refused(tls: TlsFiles, tmp_path: Path) -> None:
    async def laughs(_: web.Request) -> web.Response:
        return web.Response(text='<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>')

    token_file = tmp_path / "token"
    token_file.write_text("jwt")
    async with https_server(tls, {}, posts={"/": laughs}) as base:
        fetcher = Fetcher(limits(tls))
        try:
            provider = WebIdentityCredentials(WebIdentityConfig("arn:aws:iam::1:role/r", token_file, base), fetcher)
            with pytest.raises(CredentialsInvalid, match="DOCTYPE"):
                await provider.get()
        finally:
            await fetcher.close()


async def test_downloads_tunnel_through_the_proxy_and_keep_the_guard(tls: TlsFiles, tmp_path: Path) -> None:
    async with https_server(tls, {"/a.tar": counted(ARCHIVE, [])}) as base, connect_proxy() as proxy:
        port = base.rsplit(":", 1)[1]
        # The proxy named by host name: its own (loopback) address is the operator's choice, not guarded.
        proxy_url = proxy.url.replace("127.0.0.1", "localhost")
        fetcher = Fetcher(limits(tls, https_proxy=proxy_url))
        try:
            got = await fetcher.download(f"{base}/a.tar", tmp_path / "a")
            assert got.sha256 == ARCHIVE_SHA
            assert proxy.tunnels == [f"127.0.0.1:{port}"]
        finally:
            await fetcher.close()

        # The guard still decides where the tunnel may lead: loopback is not allowed here.
        guarded = Fetcher(limits(tls, https_proxy=proxy_url, allowed_networks=()))
        try:
            with pytest.raises(SourceRejected, match="loopback"):
                await guarded.download(f"https://localhost:{port}/a.tar", tmp_path / "b")
            with pytest.raises(SourceRejected, match="loopback"):
                await guarded.download(f"{base}/a.tar", tmp_path / "b")
        finally:
            await guarded.close()
        # Nor does the proxy's own host name, reached directly as a source, escape the guard.
        bypass = Fetcher(limits(tls, https_proxy=proxy_url, no_proxy=("localhost",), allowed_networks=()))
        try:
            with pytest.raises(SourceRejected, match="loopback"):
                await bypass.download(f"https://localhost:{port}/a.tar", tmp_path / "b")
        finally:
            await bypass.close()
        assert len(proxy.tunnels) == 1

        # noProxy hosts go direct.
        direct = Fetcher(limits(tls, https_proxy=proxy_url, no_proxy=("127.0.0.1",)))
        try:
            await direct.download(f"{base}/a.tar", tmp_path / "c")
        finally:
            await direct.close()
        assert len(proxy.tunnels) == 1


async def test_without_the_private_ca_tls_fails_by_name(tls: TlsFiles, tmp_path: Path) -> None:
    async with https_server(tls, {"/llama.tar.gz": counted(ARCHIVE, [])}) as base:
        cfg = config(tls, tmp_path / "cache", {"https": {"url": f"{base}/llama.tar.gz"}}, ARCHIVE_SHA)
        no_ca = FetchModelConfig(cfg.source, cfg.sha256, cfg.cache_dir, limits(tls, ca_bundle=None))
        with pytest.raises(FetchFailed, match="TLS verification failed") as info:
            await fetch_model(no_ca)
        assert info.value.reason == "TLSError"


def test_a_cache_that_cannot_be_written_is_a_named_failure(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from saigon_agent.model_fetch import run

    (tmp_path / "not-a-directory").write_text("x")  # a volume mounted wrong: even root cannot write under it
    env = {
        E.SOURCE: json.dumps({"https": {"url": "https://models.invalid/m.tar"}}),
        E.SHA256: "f" * 64,
        E.CACHE_DIR: str(tmp_path / "not-a-directory" / "cache"),
    }
    assert run(env) == 1
    assert "base model not fetched: CacheError" in caplog.text and "Not a directory" in caplog.text
