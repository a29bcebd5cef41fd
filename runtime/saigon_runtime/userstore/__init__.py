"""Per-user data behind one interface: files of the original layout by default, PostgreSQL for
several replicas (`SAIGON_USER_STORE=postgres` with `SAIGON_USER_STORE_DSN`)."""

from __future__ import annotations

from saigon_runtime.config import RuntimeConfig
from saigon_runtime.userstore.base import InvalidDomain, StoreUnavailable, UserStore, validate_domain

__all__ = ["InvalidDomain", "StoreUnavailable", "UserStore", "open_user_store", "validate_domain"]


def open_user_store(config: RuntimeConfig) -> UserStore | None:
    """The configured store, or None when there is nowhere to keep per-user data."""
    if config.user_store == "postgres":
        if not config.user_store_dsn:
            raise ValueError("SAIGON_USER_STORE=postgres needs SAIGON_USER_STORE_DSN")
        from saigon_runtime.userstore.postgres import PostgresUserStore

        return PostgresUserStore(config.user_store_dsn)
    if config.user_store != "files":
        raise ValueError(f"SAIGON_USER_STORE must be files or postgres, not {config.user_store!r}")
    if config.mesh_dir is None:
        return None
    from saigon_runtime.userstore.files import FileUserStore

    return FileUserStore(config.mesh_dir, config.domains_file)
