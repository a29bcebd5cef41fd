"""Runtime configuration: one place for defaults, flags and the SAIGON_* environment names."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from saigon_runtime.mesh.retrieval import DEFAULT_MAX_TOKENS as DEFAULT_MESH_TOKENS
from saigon_runtime.tokens import parse_tokens

DEFAULT_PORT = 8001

# Environment variable -> RuntimeConfig field. The single source of these names.
ENV_VARS: dict[str, str] = {
    "SAIGON_BASE_MODEL": "base_model_dir",
    "SAIGON_ADAPTERS_DIR": "adapters_dir",
    "SAIGON_MESH_DIR": "mesh_dir",
    "SAIGON_DEVICE": "device",
    "SAIGON_CPU_FALLBACK": "cpu_fallback",
    "SAIGON_CACHE_SIZE": "max_loras",
    "SAIGON_MEMORY_UTILIZATION": "memory_utilization",
    "SAIGON_CPU_CACHE_SIZE": "max_cpu_loras",
    "SAIGON_MAX_RANK": "max_rank",
    "SAIGON_MAX_BATCH": "max_batch_size",
    "SAIGON_MAX_QUEUE": "max_queue",
    "SAIGON_LOG_DIR": "log_dir",
    "SAIGON_HOST": "host",
    "SAIGON_PORT": "port",
    "SAIGON_ADMIN_TOKEN": "admin_token",
    "SAIGON_INFERENCE_TOKENS": "inference_tokens",
    "SAIGON_REQUIRED_ADAPTERS": "required_adapters",
    "SAIGON_LOG_PROMPTS": "log_prompts",
    "SAIGON_DTYPE": "dtype",
    "SAIGON_WATCH_INTERVAL": "watch_interval_s",
    "SAIGON_MAX_NEW_TOKENS": "max_new_tokens",
    "SAIGON_MAX_BODY_BYTES": "max_body_bytes",
    "SAIGON_DRAIN_TIMEOUT": "drain_timeout_s",
    "SAIGON_SLOT_WAIT_TIMEOUT": "slot_wait_timeout_s",
    "SAIGON_GIE_METRICS": "gie_metrics",
    "SAIGON_HOTSET_FILE": "hotset_file",
    "SAIGON_INFERENCE_TOKENS_FILE": "inference_tokens_file",
    "SAIGON_USER_STORE": "user_store",
    "SAIGON_USER_STORE_DSN": "user_store_dsn",
    "SAIGON_DOMAINS_FILE": "domains_file",
    "SAIGON_MESH_DEFAULT": "mesh_default",
    "SAIGON_MESH_MAX_TOKENS": "mesh_max_tokens",
    "SAIGON_AUDIT_DEST": "audit_dest",
    "SAIGON_AUDIT_SALT": "audit_salt",
    "SAIGON_AUDIT_RAW_USER_IDS": "audit_raw_user_ids",
    "SAIGON_STAGING_DIR": "staging_dir",
    "SAIGON_TOKENIZE_CONCURRENCY": "tokenize_concurrency",
    "SAIGON_DEMAND_URL": "demand_url",
    "SAIGON_DEMAND_TIMEOUT": "demand_timeout_s",
}


@dataclass
class RuntimeConfig:
    base_model_dir: Path | None = None
    adapters_dir: Path | None = None
    mesh_dir: Path | None = None
    # auto: CUDA when a device is visible, else the CPU. A failure to load on the chosen
    # accelerator keeps the runtime not Ready unless cpu_fallback allows serving from the CPU.
    device: str = "auto"
    cpu_fallback: bool = False
    dtype: str = "auto"
    # Adapters resident on the device at once. None: as many as fit in the memory budget below
    # (sized in bytes, so it follows the ranks actually present); a number also caps the count.
    max_loras: int | None = None
    # Share of the device's memory (host memory within the cgroup limit on the CPU) the runtime
    # may use, as vLLM's gpu_memory_utilization: the model, a batch reserve, then adapters.
    memory_utilization: float = 0.9
    max_cpu_loras: int = 64
    max_rank: int = 64
    max_batch_size: int = 32
    max_queue: int = 256
    slot_wait_timeout_s: float = 10.0
    log_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    admin_token: str | None = None
    # "token=user_id" pairs, comma separated; when set, inference needs a bearer token
    # and the user id comes from it, never from the request body.
    inference_tokens: dict[str, str] = field(default_factory=dict)
    required_adapters: list[str] = field(default_factory=list)
    log_prompts: bool = False
    max_body_bytes: int = 1 << 20
    max_new_tokens: int = 2048  # server cap on tokens generated per request
    drain_timeout_s: float = 30.0
    # Seconds between scans of the adapters directory for new adapters and versions; 0 disables.
    watch_interval_s: float = 2.0
    # Gateway API Inference Extension gauges (vLLM names) and per-adapter residency: adapter
    # names, which carry user ids, become label values, so an operator opts in.
    gie_metrics: bool = False
    # Where the hot set is kept across restarts; default <adapters_dir>/.saigon-hotset.json. In a
    # pod the adapters volume is the agent's (read-only here), so the operator points this at a
    # writable volume that outlives container restarts.
    hotset_file: Path | None = None
    # A file of credentials in the SAIGON_INFERENCE_TOKENS format (also one pair per line), re-read
    # when it changes: a mounted Secret, so rotating a token needs no restart. Turns inference auth on.
    inference_tokens_file: Path | None = None
    # Per-user data (meshes, the user -> domain map): "files" (mesh_dir) or "postgres" (the DSN).
    user_store: str = "files"
    user_store_dsn: str | None = None
    # The files store's user -> domain map; default <mesh_dir>/domains.json.
    domains_file: Path | None = None
    # Mesh context on the OpenAI routes when a request does not say (`mesh_context` in the body).
    mesh_default: bool = False
    mesh_max_tokens: int = DEFAULT_MESH_TOKENS  # token budget of the mesh context, every route
    # Audit log destination: "stdout" (JSON lines, for log collectors), else files in log_dir.
    audit_dest: str | None = None
    audit_salt: str | None = None  # per-install salt for hashing user ids (default: a file in log_dir)
    audit_raw_user_ids: bool = False
    # The admin load and hot-swap APIs import adapter directories from the adapters directory or
    # from under this root only, never from any path the caller names.
    staging_dir: Path | None = None
    # Prompts tokenized at once in worker threads; more wait, so huge prompts cannot take every thread.
    tokenize_concurrency: int = 2
    # The pod's agent (http://127.0.0.1:<port>): a user's adapter this replica does not hold is
    # fetched, verified and loaded through it on demand, waiting up to demand_timeout_s
    # (saigon_contract.demand). Unset: a missing adapter falls back along the cascade at once.
    demand_url: str | None = None
    demand_timeout_s: float = 30.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> RuntimeConfig:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        types = {f.name: f.type for f in fields(cls)}
        for var, name in ENV_VARS.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            try:
                values[name] = _parse(str(types[name]), raw)
            except ValueError as exc:
                raise ValueError(f"{var}={raw!r}: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name in ("base_model_dir", "adapters_dir", "mesh_dir", "log_dir", "hotset_file", "inference_tokens_file",
                     "domains_file", "staging_dir"):  # fmt: skip
            if isinstance(values.get(name), str):
                values[name] = Path(str(values[name]))
        return cls(**values)  # type: ignore[arg-type]


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _parse(type_name: str, raw: str) -> object:
    if type_name.startswith("int"):
        try:
            return int(raw)
        except ValueError:
            raise ValueError("not a whole number") from None
    if type_name.startswith("float"):
        try:
            return float(raw)
        except ValueError:
            raise ValueError("not a number") from None
    if type_name.startswith("bool"):
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ValueError(f"not a boolean (one of {', '.join(sorted(_TRUE | _FALSE))})")
        return word in _TRUE
    if type_name.startswith("Path"):
        return Path(raw)
    if type_name.startswith("list"):
        return [item.strip() for item in raw.split(",") if item.strip()]
    if type_name.startswith("dict"):
        return parse_tokens(raw)
    return raw
