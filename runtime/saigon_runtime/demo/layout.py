"""Writing the demo's files in the on-disk layout the runtime and the agent share.

adapters/<name>/<version>/{adapter_config.json, adapter_model.safetensors}
adapters/<name>/active -> <version>
adapters/domains.json            {"<user_id>": "<domain>"}
mesh/user_<id>_mesh.json         {"nodes": [...], "edges": [...]}
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

from peft import PeftModel

from saigon_runtime.adapters.format import CONFIG_FILE, WEIGHTS_FILE
from saigon_runtime.adapters.store import DOMAINS_FILE, AdapterStore

ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE)


def save_adapter(model: PeftModel, adapters_dir: Path, name: str, version: str, base_model_dir: Path) -> Path:
    """Save `model`'s adapter as `adapters_dir/name/version`, holding only the two PEFT files."""
    target = adapters_dir / name / version
    model.save_pretrained(str(target), safe_serialization=True)
    for extra in set(os.listdir(target)) - set(ADAPTER_FILES):
        (target / extra).unlink()  # the model card PEFT writes alongside
    config_path = target / CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(base_model_dir)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return target


def point_active(adapters_dir: Path, name: str, version: str) -> None:
    """Flip `adapters_dir/name/active` to `version` atomically, as the runtime and the agent do."""
    AdapterStore(adapters_dir).set_active(name, version)


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    temp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(temp, path)


def write_domains(adapters_dir: Path, domains: Mapping[str, str]) -> Path:
    path = adapters_dir / DOMAINS_FILE
    write_json(path, dict(domains))
    return path


def write_mesh(mesh_dir: Path, user_id: str, graph: Mapping[str, list[dict[str, object]]]) -> Path:
    nodes = [{"weight": 1.0, **node} for node in graph["nodes"]]
    path = mesh_dir / f"user_{user_id}_mesh.json"
    write_json(path, {"nodes": nodes, "edges": list(graph["edges"])})
    return path
