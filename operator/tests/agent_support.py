"""Helpers for the agent tests: adapter files written by hand, archives, a self-signed TLS server."""

from __future__ import annotations

import datetime
import io
import ipaddress
import json
import os
import struct
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def safetensors_bytes(tensors: dict[str, tuple[int, ...]], *, seed: int = 0) -> bytes:
    """A valid float32 safetensors file (pseudo-random data) without any ML library."""
    header: dict[str, object] = {}
    offset = 0
    blobs = []
    for i, (name, shape) in enumerate(sorted(tensors.items())):
        count = 1
        for dim in shape:
            count *= dim
        blob = bytes((seed + i + j) % 251 for j in range(count * 4))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(blobs)


def write_adapter(directory: Path, *, seed: int = 0, rank: int = 4, weights_kb: int = 0) -> Path:
    """A PEFT-shaped LoRA directory (config + safetensors); `weights_kb` pads the weights."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 8, "target_modules": ["q_proj"], "seed": seed}
    (directory / "adapter_config.json").write_text(json.dumps(config))
    tensors = {
        "base_model.model.layers.0.self_attn.q_proj.lora_A.weight": (rank, 64),
        "base_model.model.layers.0.self_attn.q_proj.lora_B.weight": (64, rank),
    }
    if weights_kb:
        tensors["pad"] = (weights_kb * 256,)
    (directory / "adapter_model.safetensors").write_bytes(safetensors_bytes(tensors, seed=seed))
    return directory


def tar_bytes(files: dict[str, bytes], *, gz: bool = False, links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


def adapter_archive(directory: Path, *, gz: bool = False, prefix: str = "") -> bytes:
    return tar_bytes(
        {
            prefix + name: (directory / name).read_bytes()
            for name in ("adapter_config.json", "adapter_model.safetensors")
        },
        gz=gz,
    )


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


def make_tls(directory: Path) -> TlsFiles:
    """A self-signed certificate for localhost / 127.0.0.1 (its own CA bundle)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "saigon-test-source")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "tls.crt", directory / "tls.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(files.key, 0o600)
    return files


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def https_server(
    tls: TlsFiles, routes: dict[str, Handler], posts: dict[str, Handler] | None = None
) -> AsyncIterator[str]:
    """Serves `routes` (GET) and `posts` (POST) over TLS on 127.0.0.1 (an ephemeral port); yields the base URL."""
    import ssl

    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    for path, handler in (posts or {}).items():
        app.router.add_post(path, handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclass
class ConnectProxy:
    url: str
    tunnels: list[str]  # the CONNECT targets, in order


@asynccontextmanager
async def connect_proxy() -> AsyncIterator[ConnectProxy]:
    """A real HTTP CONNECT proxy on 127.0.0.1 (what squid or tinyproxy do for https): it reads the
    CONNECT line, dials the target and relays bytes both ways, never seeing inside the TLS."""
    import asyncio

    tunnels: list[str] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        tunnels.append(target)
        host, port = target.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(relay(reader, upstream_writer), relay(upstream_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield ConnectProxy(f"http://127.0.0.1:{port}", tunnels)
    finally:
        server.close()
