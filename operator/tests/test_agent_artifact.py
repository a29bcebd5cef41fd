"""Unpacking and checking adapter artifacts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from agent_support import adapter_archive, safetensors_bytes, tar_bytes, write_adapter
from saigon_agent import artifact
from saigon_agent.cli import main as agent_cli
from saigon_agent.errors import InvalidArtifact, TooLarge


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    return write_adapter(tmp_path / "src", seed=3)


def unpack_bytes(tmp_path: Path, data: bytes, max_bytes: int = 1 << 30) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    archive = tmp_path / "a.tar"
    archive.write_bytes(data)
    dest = tmp_path / "out"
    dest.mkdir()
    artifact.unpack(archive, dest, max_bytes=max_bytes)
    return dest


@pytest.mark.parametrize(("gz", "prefix"), [(False, ""), (True, ""), (False, "./"), (True, "user_42-v1/")])
def test_unpack_accepts_plain_gzip_and_one_wrapping_dir(tmp_path: Path, adapter: Path, gz: bool, prefix: str) -> None:
    out = unpack_bytes(tmp_path, adapter_archive(adapter, gz=gz, prefix=prefix))
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    for name in artifact.ADAPTER_FILES:
        assert (out / name).read_bytes() == (adapter / name).read_bytes()
    artifact.validate(out)


def test_unpack_writes_only_adapter_files_and_nothing_outside(tmp_path: Path, adapter: Path) -> None:
    files = {name: (adapter / name).read_bytes() for name in artifact.ADAPTER_FILES}
    files["../evil.txt"] = b"x"
    files["../../adapter_config.json"] = b"{}"
    files["pytorch_model.bin"] = b"pickle"
    files["a/b/adapter_model.safetensors"] = b"too deep"
    out = unpack_bytes(tmp_path, tar_bytes(files))
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert not (tmp_path / "evil.txt").exists()
    assert (out / "adapter_model.safetensors").read_bytes() == (adapter / "adapter_model.safetensors").read_bytes()


def test_unpack_rejects_links_duplicates_and_missing_files(tmp_path: Path, adapter: Path) -> None:
    config = (adapter / "adapter_config.json").read_bytes()
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    with pytest.raises(InvalidArtifact, match="not a regular file"):
        unpack_bytes(
            tmp_path / "1",
            tar_bytes({"adapter_config.json": config}, links={"adapter_model.safetensors": "/etc/passwd"}),
        )
    with pytest.raises(InvalidArtifact, match="more than once"):
        unpack_bytes(
            tmp_path / "2",
            tar_bytes(
                {"adapter_config.json": config, "x/adapter_config.json": config, "adapter_model.safetensors": weights}
            ),
        )
    with pytest.raises(InvalidArtifact, match=r"lacks adapter_model\.safetensors"):
        unpack_bytes(tmp_path / "3", tar_bytes({"adapter_config.json": config}))
    with pytest.raises(InvalidArtifact, match="not a readable tar"):
        unpack_bytes(tmp_path / "4", b"this is not a tar archive at all" * 40)


def test_unpack_stops_a_decompression_bomb(tmp_path: Path, adapter: Path) -> None:
    files = {"adapter_config.json": b"{}", "adapter_model.safetensors": b"\0" * (4 << 20)}
    data = tar_bytes(files, gz=True)
    assert len(data) < 64 << 10  # small on the wire...
    with pytest.raises(TooLarge, match="more than 1048576 bytes"):
        unpack_bytes(tmp_path, data, max_bytes=1 << 20)  # ...large once unpacked


def test_validate_catches_corrupt_files(tmp_path: Path, adapter: Path) -> None:
    weights = adapter / "adapter_model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(InvalidArtifact, match="points outside the file"):
        artifact.validate(adapter)
    weights.write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(InvalidArtifact, match="impossible header length"):
        artifact.validate(adapter)
    weights.write_bytes(safetensors_bytes({}))
    with pytest.raises(InvalidArtifact, match="holds no tensors"):
        artifact.validate(adapter)
    weights.write_bytes(good)
    (adapter / "adapter_config.json").write_text("{not json")
    with pytest.raises(InvalidArtifact, match="not valid JSON"):
        artifact.validate(adapter)
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    with pytest.raises(InvalidArtifact, match="only LORA"):
        artifact.validate(adapter)


def test_a_deeply_nested_config_is_a_permanent_refusal(tmp_path: Path, adapter: Path) -> None:
    # json.loads raised RecursionError here, which the syncer retried forever as an internal error.
    (adapter / "adapter_config.json").write_text("[" * 60_000 + "]" * 60_000)
    with pytest.raises(InvalidArtifact, match="nests too deeply") as refused:
        artifact.validate(adapter)
    assert refused.value.transient is False
    weights = adapter / "adapter_model.safetensors"
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    header = b"[" * 60_000 + b"]" * 60_000
    weights.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(InvalidArtifact, match="corrupt header"):
        artifact.validate(adapter)


def test_unpack_refuses_an_archive_with_too_many_members(tmp_path: Path, adapter: Path) -> None:
    files = {f"junk/{i}": b"" for i in range(artifact.MAX_ARCHIVE_MEMBERS)}
    files.update({name: (adapter / name).read_bytes() for name in artifact.ADAPTER_FILES})
    with pytest.raises(InvalidArtifact, match=f"more than {artifact.MAX_ARCHIVE_MEMBERS} members"):
        unpack_bytes(tmp_path, tar_bytes(files))
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


def test_directory_digest_is_a_sha256sum_manifest(adapter: Path) -> None:
    lines = "".join(
        f"{hashlib.sha256((adapter / name).read_bytes()).hexdigest()}  {name}\n"
        for name in sorted(artifact.ADAPTER_FILES)
    )
    assert artifact.directory_digest(adapter) == hashlib.sha256(lines.encode()).hexdigest()
    copy = adapter.parent / "copy"
    copy.mkdir()
    assert artifact.copy_directory(adapter, copy, max_bytes=1 << 30) == artifact.directory_digest(adapter)


def test_cli_digest_prints_what_a_saigonadapter_needs(
    tmp_path: Path, adapter: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "a.tar"
    archive.write_bytes(adapter_archive(adapter))
    assert agent_cli(["digest", str(archive)]) == 0
    assert capsys.readouterr().out.strip() == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert agent_cli(["digest", str(adapter)]) == 0
    assert capsys.readouterr().out.strip() == artifact.directory_digest(adapter)
    assert agent_cli(["digest", str(tmp_path / "nope")]) == 2
