"""The one explicit way to bring a pickle-era adapter in: convert it to safetensors.

`torch.load(weights_only=True)` refuses any pickle that would build arbitrary objects, so a
malicious file fails here instead of running code; the result is a normal PEFT directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from saigon_runtime.adapters.format import CONFIG_FILE, PICKLE_FILES, WEIGHTS_FILE, read_config
from saigon_runtime.errors import AdapterRejected


def import_legacy(source: Path, dest: Path) -> Path:
    """Convert `source` (adapter_config.json + a pickle state dict) into a safetensors adapter at `dest`."""
    read_config(source, source.name)
    pickles = [source / p for p in PICKLE_FILES if (source / p).is_file()]
    if not pickles:
        raise AdapterRejected(f"{source} has no legacy weights file ({', '.join(PICKLE_FILES)})")
    try:
        state = torch.load(pickles[0], map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError and friends: the file wanted more than tensors
        raise AdapterRejected(f"{pickles[0].name} is not a plain tensor state dict: {exc}") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise AdapterRejected(f"{pickles[0].name} must hold a flat dict of name -> tensor")
    dest.mkdir(parents=True, exist_ok=False)
    save_file({k: v.contiguous() for k, v in state.items()}, str(dest / WEIGHTS_FILE))
    shutil.copyfile(source / CONFIG_FILE, dest / CONFIG_FILE)
    json.loads((dest / CONFIG_FILE).read_text())
    return dest
