"""`SaigonInference`: the original design's Python API, usable without any server.

engine = SaigonInference(base_model_dir="...", adapters_dir="...", mesh_dir="...")
engine.run_inference("alice", "What should I cook tonight?", temperature=0)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from saigon_runtime.adapters.names import user_adapter
from saigon_runtime.assembly import build_engine
from saigon_runtime.audit import audit_from_config
from saigon_runtime.config import RuntimeConfig
from saigon_runtime.engine.types import DEFAULT_TEMPERATURE
from saigon_runtime.errors import InvalidRequest
from saigon_runtime.service import InferenceService, Prepared
from saigon_runtime.userstore import open_user_store

_REQUEST_KEYS = {
    "user_id", "user_input", "use_mesh_context", "temperature", "max_length", "system_prompt", "adapter", "top_p",
}  # fmt: skip


class SaigonInference:
    """One base model and many adapters in this process. Arguments override SAIGON_* variables."""

    def __init__(
        self,
        base_model_dir: str | Path | None = None,
        adapters_dir: str | Path | None = None,
        mesh_dir: str | Path | None = None,
        device: str | None = None,
        use_cache: bool = True,
        log_dir: str | Path | None = None,
        **config: Any,
    ) -> None:
        overrides: dict[str, Any] = {
            "base_model_dir": base_model_dir, "adapters_dir": adapters_dir, "mesh_dir": mesh_dir,
            "device": device, "log_dir": log_dir, **config,
        }  # fmt: skip
        self.config = RuntimeConfig.from_env(**{k: v for k, v in overrides.items() if v is not None})
        if not use_cache:  # the original "no cache" mode: one resident adapter, nothing kept in host memory
            self.config.max_loras, self.config.max_cpu_loras = 1, 1
        self.use_cache = use_cache
        self.engine = build_engine(self.config)
        self.engine.start()
        self.users = open_user_store(self.config)
        self.service = InferenceService(
            self.engine, self.users, audit_from_config(self.config), mesh_max_tokens=self.config.mesh_max_tokens
        )
        self.current_user: str | None = None
        self.current_adapter: str | None = None

    # ---- inference ----------------------------------------------------------------------
    def run_inference(
        self,
        user_id: str | None,
        user_input: str,
        use_mesh_context: bool = True,
        temperature: float = DEFAULT_TEMPERATURE,
        max_length: int | None = None,
        system_prompt: str | None = None,
        adapter: str | None = None,
        top_p: float = 1.0,
    ) -> dict[str, object]:
        """Answer one request; `max_length` is the most new tokens to generate."""
        prepared = self._prepare(user_id, user_input, use_mesh_context, temperature, max_length,
                                 system_prompt, adapter, top_p)  # fmt: skip
        result = self.engine.submit(prepared.request).result()
        self.current_user = user_id
        return self.service.report(prepared, result)

    def run_batch(self, requests: list[dict[str, Any]]) -> list[dict[str, object]]:
        """Serve many requests together (mixed adapters in one batch); results in order."""
        prepared: list[Prepared] = []
        for i, item in enumerate(requests):
            unknown = set(item) - _REQUEST_KEYS
            if unknown or "user_input" not in item:
                raise InvalidRequest(f"request {i}: needs user_input; unknown keys {sorted(unknown)}")
            prepared.append(
                self._prepare(
                    item.get("user_id"), item["user_input"], item.get("use_mesh_context", True),
                    item.get("temperature", DEFAULT_TEMPERATURE), item.get("max_length"), item.get("system_prompt"),
                    item.get("adapter"), item.get("top_p", 1.0),
                )
            )  # fmt: skip
        handles = [self.engine.submit(p.request) for p in prepared]
        return [self.service.report(p, h.result()) for p, h in zip(prepared, handles, strict=True)]

    def _prepare(
        self, user_id: str | None, user_input: str, use_mesh_context: bool, temperature: float,
        max_length: int | None, system_prompt: str | None, adapter: str | None, top_p: float,
    ) -> Prepared:  # fmt: skip
        return self.service.prepare(
            user_id, user_input, use_mesh_context=use_mesh_context, temperature=temperature, top_p=top_p,
            max_new_tokens=max_length, system_prompt=system_prompt, adapter=adapter,
        )  # fmt: skip

    # ---- adapters -----------------------------------------------------------------------
    def load_model_with_adapter(self, user_id: str) -> dict[str, object]:
        """Resolve the user's cascade and make that adapter resident; the base stays loaded."""
        resolution = self.engine.adapters.resolve(user_id)
        if resolution.adapter is not None:
            self.engine.adapters.pool.warm(self.engine.adapters.host_adapter(resolution.adapter))
        self.current_user = user_id
        self.current_adapter = resolution.adapter.name if resolution.adapter else None
        return {
            "user_id": user_id,
            "adapter_used": self.current_adapter,
            "adapter_active": resolution.adapter.version if resolution.adapter else None,
            "adapter_scope": resolution.scope,
            "fallback_reason": resolution.fallback_reason,
        }

    def hot_swap_adapter(
        self, new_adapter_path: str | Path, backup_current: bool = True, user_id: str | None = None
    ) -> dict[str, object]:
        """Install a new version of the current user's adapter and make it current atomically.

        Requests already running finish on the version they started with. With
        `backup_current=False` the previous version's files are removed afterwards.
        """
        user = user_id or self.current_user
        if user is None:
            raise InvalidRequest("no current user: call load_model_with_adapter(user_id) or pass user_id")
        name = user_adapter(user)
        started = time.perf_counter()
        previous, info = self.engine.adapters.swap(name, Path(new_adapter_path), keep_previous=backup_current)
        self.current_user, self.current_adapter = user, name
        return {
            "success": True,
            "adapter": name,
            "version": info.version,
            "previous_version": previous,
            "swap_ms": round((time.perf_counter() - started) * 1000.0, 3),
        }

    def get_status(self) -> dict[str, object]:
        stats = self.engine.stats()
        cache = stats.cache
        return {
            "engine_initialized": True,
            "current_user": self.current_user,
            "current_adapter": self.current_adapter,
            "device": self.engine.device,
            "cache_enabled": self.use_cache,
            "cache_size": cache.resident_device,
            "cache_max_size": cache.max_loras,
            "host_cache_size": cache.resident_host,
            "host_cache_max_size": cache.max_cpu_loras,
            "resident_adapters": [f"{n}@{v}" for n, v in self.engine.adapters.pool.resident()],
            "cache_hits": cache.hits,
            "cache_misses": cache.misses,
            "evictions": cache.evictions,
            "queue_depth": stats.queue_depth,
            "running": stats.running,
        }

    def close(self) -> None:
        self.engine.stop(self.config.drain_timeout_s)
        if self.service.audit is not None:
            self.service.audit.close()
        if self.users is not None:
            self.users.close()

    def __enter__(self) -> SaigonInference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
