"""Puts an engine together from configuration: the base model, then the adapter manager it serves from.

The engine receives its adapter manager rather than building it, so `engine` depends on
`adapters` and never the other way round; this is the one place that builds both.
"""

from __future__ import annotations

import logging
from pathlib import Path

from saigon_runtime.adapters.manager import AdapterManager
from saigon_runtime.adapters.pool import SlotPool
from saigon_runtime.adapters.store import AdapterStore
from saigon_runtime.config import RuntimeConfig
from saigon_runtime.engine import threads
from saigon_runtime.engine.engine import Engine
from saigon_runtime.engine.lora import lora_targets
from saigon_runtime.engine.memory import NOMINAL_RANK, plan_adapter_memory
from saigon_runtime.engine.model_loader import LoadedModel, load_base_model
from saigon_runtime.errors import EngineError

log = logging.getLogger(__name__)


def adapter_manager(config: RuntimeConfig, loaded: LoadedModel) -> AdapterManager:
    store = AdapterStore(config.adapters_dir) if config.adapters_dir is not None else None
    shapes = lora_targets(loaded.model)
    memory = plan_adapter_memory(
        loaded.model, shapes, loaded.device, loaded.dtype, utilization=config.memory_utilization,
        max_batch_size=config.max_batch_size, max_rank=config.max_rank,
    )  # fmt: skip
    log.info("device tier: %s", memory.describe())
    pool = SlotPool(
        config.max_loras, loaded.device, byte_budget=memory.adapter_budget,
        nominal_adapter_bytes=memory.bytes_per_rank * NOMINAL_RANK,
    )  # fmt: skip
    return AdapterManager(
        store,
        shapes,
        pool,
        max_rank=config.max_rank,
        max_cpu_loras=config.max_cpu_loras,
        host_dtype=loaded.dtype,
        pin_host_memory=loaded.device.type == "cuda",
    )


def build_engine(config: RuntimeConfig) -> Engine:
    if config.base_model_dir is None:
        raise EngineError("no base model directory configured (SAIGON_BASE_MODEL)")
    threads.hand_over()  # before the load: a thread that ran torch on more threads keeps them
    loaded = load_base_model(Path(config.base_model_dir), config.device, config.dtype, cpu_fallback=config.cpu_fallback)
    return Engine(loaded, config, adapter_manager(config, loaded))
