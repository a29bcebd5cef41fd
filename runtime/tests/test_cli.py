"""`saigon-runtime`: flags override SAIGON_* variables; `infer` answers once from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from saigon_runtime.cli import build_parser, config_from_args, main
from saigon_runtime.config import DEFAULT_PORT
from saigon_runtime.testing.tiny import install_adapter


def test_serve_defaults_and_flags_over_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("SAIGON_PORT", "SAIGON_DEVICE", "SAIGON_CACHE_SIZE", "SAIGON_HOST", "SAIGON_REQUIRED_ADAPTERS"):
        monkeypatch.delenv(var, raising=False)
    config = config_from_args(build_parser().parse_args(["serve"]))
    assert config.port == DEFAULT_PORT and config.host == "127.0.0.1"

    monkeypatch.setenv("SAIGON_PORT", "9000")
    monkeypatch.setenv("SAIGON_DEVICE", "cuda")
    monkeypatch.setenv("SAIGON_CACHE_SIZE", "3")
    config = config_from_args(build_parser().parse_args(["serve", "--port", "9100", "--device", "cpu"]))
    assert (config.port, config.device, config.max_loras) == (9100, "cpu", 3)

    args = ["serve", "--adapters_dir", str(tmp_path), "--required-adapters", "global, domain_law", "--cache-size", "5"]
    config = config_from_args(build_parser().parse_args(args))
    assert config.adapters_dir == tmp_path and config.max_loras == 5
    assert config.required_adapters == ["global", "domain_law"]


def test_secrets_are_not_flags() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--admin-token", "x"])


def test_infer_answers_once(tiny_llama_dir: Path, adapter_factory, tmp_path: Path) -> None:
    adapters, mesh = tmp_path / "adapters", tmp_path / "mesh"
    install_adapter(adapters, "user_alice", "v1", adapter_factory(tiny_llama_dir, seed=1))
    mesh.mkdir()
    graph = {"nodes": [{"id": "s", "label": "soup", "text": "green soup"}], "edges": []}
    (mesh / "user_alice_mesh.json").write_text(json.dumps(graph))
    command = [
        sys.executable, "-m", "saigon_runtime.cli", "infer", "--user_id", "alice", "--prompt", "soup please",
        "--temperature", "0", "--max_length", "3", "--base_model", str(tiny_llama_dir), "--adapters_dir",
        str(adapters), "--mesh_dir", str(mesh), "--device", "cpu", "--json",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["adapter_used"] == "user_alice" and answer["adapter_active"] == "v1"
    assert answer["mesh_context_used"] is True and answer["completion_tokens"] == 3
    assert answer["device"] == "cpu"


def test_infer_reports_a_bad_base_model_plainly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["infer", "--prompt", "x", "--base_model", str(tmp_path / "nothing"), "--device", "cpu"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_import_legacy_converts_a_plain_state_dict_and_refuses_a_malicious_pickle(
    tiny_llama_dir: Path, adapter_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pickle
    import shutil

    import torch
    from safetensors.torch import load_file

    legacy = tmp_path / "legacy"
    shutil.copytree(adapter_factory(tiny_llama_dir, seed=7), legacy)
    tensors = load_file(str(legacy / "adapter_model.safetensors"))
    (legacy / "adapter_model.safetensors").unlink()
    torch.save(tensors, legacy / "adapter_model.bin")
    assert main(["import-legacy", str(legacy), str(tmp_path / "converted")]) == 0
    converted = load_file(str(tmp_path / "converted" / "adapter_model.safetensors"))
    assert converted.keys() == tensors.keys() and all(torch.equal(converted[k], tensors[k]) for k in tensors)
    assert main(["import-legacy", str(legacy), str(tmp_path / "converted")]) == 2  # never over an existing one
    assert "exists" in capsys.readouterr().err

    marker = tmp_path / "marker"
    with (legacy / "adapter_model.bin").open("wb") as f:
        pickle.dump({"x": _WritesMarker(marker)}, f)
    assert main(["import-legacy", str(legacy), str(tmp_path / "evil")]) == 2
    assert "not a plain tensor state dict" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "evil").exists()


class _WritesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.write_text, (self.marker, "pwned"))
