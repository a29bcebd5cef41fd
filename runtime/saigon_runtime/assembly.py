"""Puts an engine together from configuration: the base model, then the adapter manager it serves from.

The engine receives its adapter manager rather than building it, so `engine` depends on
`adapters` and never the other way round; this is the one place that builds both.
"""

from __future__ import annotations

from pathlib import Path

from saigon_runtime.adapters.manager import AdapterManager
from saigon_runtime.adapters.pool import SlotPool
from saigon_runtime.adapters.store import AdapterStore
from saigon_runtime.config import RuntimeConfig
from saigon_runtime.engine.engine import Engine
from saigon_runtime.engine.lora import lora_targets
from saigon_runtime.engine.model_loader import LoadedModel, load_base_model
from saigon_runtime.errors import EngineError


def adapter_manager(config: RuntimeConfig, loaded: LoadedModel) -> AdapterManager:
    store = AdapterStore(config.adapters_dir) if config.adapters_dir is not None else None
    return AdapterManager(
        store,
        lora_targets(loaded.model),
        SlotPool(config.max_loras, loaded.device),
        max_rank=config.max_rank,
        max_cpu_loras=config.max_cpu_loras,
        host_dtype=loaded.dtype,
        pin_host_memory=loaded.device.type == "cuda",
    )


def build_engine(config: RuntimeConfig) -> Engine:
    if config.base_model_dir is None:
        raise EngineError("no base model directory configured (SAIGON_BASE_MODEL)")
    loaded = load_base_model(Path(config.base_model_dir), config.device, config.dtype)
    return Engine(loaded, config, adapter_manager(config, loaded))
