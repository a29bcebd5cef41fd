"""The adapter registry: which version each name serves, the cascade, and the cache tiers.

Tiers: device slots (`SlotPool`, max_loras), host memory (validated `HostAdapter`s, LRU,
max_cpu_loras), and disk (`AdapterStore`). Disk adapters cost nothing until first used.
This module knows nothing about HTTP; the engine and the API layers call it.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from saigon_runtime.adapters.format import HostAdapter, load_adapter
from saigon_runtime.adapters.names import check_name, check_version, domain_adapter, scope_of, user_adapter
from saigon_runtime.adapters.pool import SlotPool
from saigon_runtime.adapters.store import AdapterStore
from saigon_runtime.adapters.types import AdapterRef, DeviceAdapter, ModuleShape, VersionHold
from saigon_runtime.errors import AdapterNotFound, AdapterRejected, EngineError

Key = tuple[str, str]


@dataclass
class Resolution:
    adapter: AdapterRef | None
    scope: str
    fallback_reason: str | None = None


@dataclass
class AdapterInfo:
    name: str
    version: str | None
    active_version: str | None
    versions: list[str]
    tier: str  # device | host | disk
    pinned: bool
    loaded_at: float | None
    error: str | None
    digest: str | None = None

    @property
    def scope(self) -> str:
        return scope_of(self.name)


@dataclass
class CacheStats:
    hits: int
    misses: int
    loads: int
    evictions: int
    load_seconds_total: float
    last_load_seconds: float
    resident_device: int
    resident_host: int
    max_loras: int
    max_cpu_loras: int
    host_hits: int
    host_misses: int
    host_evictions: int
    device_bytes: int
    rejections: int = 0  # versions refused: corrupt, unsafe or not fitting the base
    resident_by_scope: dict[str, int] = field(default_factory=dict)


class AdapterManager:
    def __init__(
        self,
        store: AdapterStore | None,
        shapes: dict[str, ModuleShape],
        pool: SlotPool,
        *,
        max_rank: int,
        max_cpu_loras: int,
        host_dtype: torch.dtype,
        pin_host_memory: bool = False,
    ) -> None:
        self.store = store
        self.shapes = shapes
        self.pool = pool
        self.max_rank = max_rank
        self.max_cpu_loras = max(1, max_cpu_loras)
        self.host_dtype = host_dtype
        self.pin_host_memory = pin_host_memory
        self._host: OrderedDict[Key, HostAdapter] = OrderedDict()
        self._failures: dict[Key, tuple[tuple[float, ...], str]] = {}
        self._current: dict[str, str] = {}  # versions made current through the API
        self._disabled: set[str] = set()  # unloaded names: not served until loaded again
        self._good: dict[str, str] = {}  # the last version of each name that passed verification
        self._scan_outcomes: dict[str, str] = {}  # what refresh() last reported per name
        self._lock = threading.RLock()
        self._loading: dict[Key, threading.Lock] = {}
        # The versions that resolved refs still wait on: only these keep a copy once unloaded.
        self._holds: weakref.WeakValueDictionary[Key, VersionHold] = weakref.WeakValueDictionary()
        self.host_hits = 0
        self.host_misses = 0
        self.rejections = 0
        self.host_evictions = 0
        # The user -> domain map of the user store, consulted before the adapters directory's
        # legacy domains.json; set by whoever owns the store (the server, SaigonInference).
        self.domains: Callable[[str], str | None] | None = None

    # ---- versions -------------------------------------------------------------------
    def current_version(self, name: str) -> str | None:
        with self._lock:
            if name in self._disabled:
                return None
            version = self._current.get(name)
        if version is not None:
            return version
        return self.store.active_version(name) if self.store is not None else None

    def _path(self, name: str, version: str) -> Path:
        with self._lock:
            host = self._host.get((name, version))
        if host is not None:
            return host.path
        if self.store is None:
            raise AdapterNotFound(f"adapter {name!r} version {version!r} is not known")
        return self.store.version_path(name, version)

    # ---- host tier --------------------------------------------------------------------
    def host_adapter(self, ref: AdapterRef) -> HostAdapter:
        """The validated host copy of one version, loading it from disk when needed."""
        key = (ref.name, ref.version)
        with self._lock:
            host = self._host.get(key)
            if host is not None:
                self._host.move_to_end(key)
                self.host_hits += 1
                return host
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # one disk load per version at a time; others wait for its result
            try:
                return self._read_host(ref)
            except OSError as exc:  # e.g. its files removed while read: this version fails, nothing else
                why = f"adapter {ref.name!r} version {ref.version!r} could not be read: {exc.strerror or exc}"
                raise (AdapterNotFound if isinstance(exc, FileNotFoundError) else AdapterRejected)(why) from exc
            finally:
                with self._lock:
                    self._loading.pop(key, None)

    def _read_host(self, ref: AdapterRef, *, keep: bool = True) -> HostAdapter:
        """Reads and validates one version; `keep`: into the host tier."""
        key = (ref.name, ref.version)
        with self._lock:
            host = self._host.get(key)
            if host is not None:
                return host
        path = self._path(ref.name, ref.version)
        signature = _signature(path)
        with self._lock:
            failure = self._failures.get(key)
            if failure is not None and failure[0] == signature:
                raise AdapterRejected(failure[1])
            self.host_misses += 1
        try:
            host = load_adapter(
                path, name=ref.name, version=ref.version, shapes=self.shapes,
                max_rank=self.max_rank, dtype=self.host_dtype,
            )  # fmt: skip
        except AdapterRejected as exc:
            with self._lock:
                self._failures[key] = (signature, str(exc))
                self.rejections += 1
            raise
        if self.pin_host_memory:
            host.modules = {m: (a.pin_memory(), b.pin_memory()) for m, (a, b) in host.modules.items()}
        with self._lock:
            self._failures.pop(key, None)
            if not keep:
                return host
            self._host[key] = host
            while len(self._host) > self.max_cpu_loras:
                self._host.popitem(last=False)
                self.host_evictions += 1
        return host

    # ---- device tier (engine thread) ---------------------------------------------------
    def held(self, ref: AdapterRef) -> AdapterRef:
        """`ref`, verified (read from disk when needed), carrying its version's hold so that it
        stays servable should the version be unloaded before the engine admits it."""
        if ref.hold is not None:
            return ref
        key = (ref.name, ref.version)
        host = self.host_adapter(ref)
        with self._lock:
            hold = self._holds.get(key)
            if hold is None:
                hold = self._holds[key] = VersionHold()
            if hold.host is None and key not in self._host and self.current_version(ref.name) != ref.version:
                hold.host = host  # unloaded between the read and now
        return replace(ref, hold=hold)

    def acquire(self, ref: AdapterRef) -> DeviceAdapter | None:
        """A device slot holding `ref` with one reference, or None when all slots are busy."""
        retired = ref.hold.host if ref.hold is not None else None
        if retired is not None:  # unloaded since the request resolved it: a slot only while in use
            return self.pool.try_acquire(retired, transient=True)
        return self.pool.try_acquire(self.host_adapter(ref))

    def release(self, dev: DeviceAdapter) -> None:
        self.pool.release(dev)

    # ---- the cascade ------------------------------------------------------------------
    def resolve(self, user_id: str | None, explicit: str | None = None, *, strict: bool = False) -> Resolution:
        """explicit -> user_<id> -> the user's domain -> global -> base.

        With `strict`, an explicit adapter that cannot serve raises instead of falling back.
        """
        candidates: list[str] = []
        if explicit:
            candidates.append(check_name(explicit))
        if user_id:
            candidates.append(user_adapter(user_id))
            domain = self.domain_of(user_id)
            if domain:
                candidates.append(domain_adapter(domain))
        candidates.append("global")
        reasons: list[str] = []
        for i, name in enumerate(dict.fromkeys(candidates)):
            try:
                ref = self._serviceable(name)
            except EngineError as exc:
                if strict and i == 0 and explicit:
                    raise
                reasons.append(f"{name}: {_short_reason(exc)}")
                continue
            return Resolution(ref, scope_of(name), "; ".join(reasons) or None)
        return Resolution(None, "base", "; ".join(reasons) or None)

    def domain_of(self, user_id: str) -> str | None:
        domain = self.domains(user_id) if self.domains is not None else None
        if domain is None and self.store is not None:
            domain = self.store.domain_of(user_id)
        return domain

    def _serviceable(self, name: str) -> AdapterRef:
        """The version to serve for a name: the current one if it verifies, else the last good one.

        A broken new version on disk (a bad `active` flip) never replaces a working one.
        """
        version = self.current_version(name)
        if version is None:
            raise AdapterNotFound(f"adapter {name!r} is missing")
        try:
            ref = self.held(AdapterRef(name, version))
        except EngineError:
            with self._lock:
                good = self._good.get(name)
            if good is None or good == version:
                raise
            return self.held(AdapterRef(name, good))
        with self._lock:
            self._good[name] = version
        return ref

    def refresh(self) -> dict[str, str]:
        """Verify every name's active version on disk now (new adapters, new `active` targets).

        Returns {name: outcome} for the names whose outcome changed since the last scan (a refused
        version is reported once, and tried again only when its files change). Each name is checked
        alone: one unreadable or malformed adapter never stops the scan. Runs off the request path
        (a watcher thread), so requests rarely pay for a disk load.
        """
        if self.store is None:
            return {}
        outcomes: dict[str, str] = {}
        for name in self.store.names():
            version: str | None = None
            try:
                version = self.current_version(name)
                with self._lock:
                    known = version is None or self._good.get(name) == version or (name, version) in self._host
                if known:
                    continue
                self._serviceable(name)
                outcome = f"verified {version}"
            except EngineError as exc:
                outcome = f"rejected {version}: {exc}"
            except OSError as exc:  # unreadable files: refused like a malformed adapter, retried on change
                outcome = f"rejected {version}: {exc.strerror or type(exc).__name__}"
            with self._lock:
                if self._scan_outcomes.get(name) == outcome:
                    continue
                self._scan_outcomes[name] = outcome
            outcomes[name] = outcome
        return outcomes

    # ---- management ---------------------------------------------------------------------
    def load(self, name: str, version: str | None = None, path: str | Path | None = None) -> AdapterInfo:
        """Validate and load a version, make it resident if a slot is free, then make it current."""
        return self.commit(self.prepare(name, version, path))

    def prepare(self, name: str, version: str | None = None, path: str | Path | None = None) -> AdapterRef:
        """The heavy half of `load`: import the files, read and validate them into the host tier.
        It holds no lock the serving path waits on (a version not yet current is asked for by no
        request), so it may run at a lower CPU priority than serving."""
        check_name(name)
        if path is not None:
            source = Path(path)
            if self.store is None:
                raise AdapterNotFound("this runtime has no adapters directory to load into")
            if version is not None and source.resolve() == (self.store.root / name / version).resolve():
                check_version(version)
            else:
                version = self.store.import_version(name, source, version)
        if version is None:
            version = self.store.active_version(name) if self.store is not None else None
            if version is None:
                raise AdapterNotFound(f"adapter {name!r} has no active version to load")
        ref = AdapterRef(name, check_version(version))
        self.host_adapter(ref)
        return ref

    def commit(self, ref: AdapterRef) -> AdapterInfo:
        """The light half of `load`: the device slot (under the slot pool's lock, which the engine
        takes too), then the version becomes current."""
        name = ref.name
        host = self.host_adapter(ref)  # from the host tier, unless evicted meanwhile
        self.pool.warm(host)
        with self._lock:
            self._current[name] = ref.version
            self._disabled.discard(name)
        if self.store is not None and self.store.active_version(name) != ref.version:
            self.store.set_active(name, ref.version)
        return self.info(name)

    def swap(self, name: str, path: str | Path, keep_previous: bool = True) -> tuple[str | None, AdapterInfo]:
        """Install `path` as a new version of `name` and make it current; returns (previous, info).

        Running requests keep their device copy of the previous version; with
        `keep_previous=False` its files are removed once the new one is current.
        """
        previous = self.current_version(name)
        return previous, self.swapped_in(previous, self.load(name, None, path), keep_previous)

    def swapped_in(self, previous: str | None, info: AdapterInfo, keep_previous: bool) -> AdapterInfo:
        """After a swap's load: the previous version's files go unless they are kept."""
        if not keep_previous and previous not in (None, info.version) and self.store is not None:
            assert previous is not None
            self.store.remove_version(info.name, previous)
        return info

    def unload(self, name: str, version: str | None = None) -> None:
        """Stops serving `name` (or one version of it). Requests that already resolved a version
        going away keep it: their hold takes its host copy, read now if the tier had dropped it
        (the agent removes the files only after this returns)."""
        check_name(name)
        if version is not None:
            check_version(version)
        with self._lock:
            known = name in self._current or any(k[0] == name for k in self._host)
            if not known and (self.store is None or not self.store.exists(name)):
                raise AdapterNotFound(f"adapter {name!r} is not loaded")

            def going(key: Key) -> bool:
                return key[0] == name and version in (None, key[1])

            held = {k: h for k, h in self._holds.items() if going(k) and h.host is None}
            for key in [k for k in self._host if going(k)]:
                host = self._host.pop(key)
                if key in held:
                    held.pop(key).host = host
            if version is None or self.current_version(name) == version:
                self._current.pop(name, None)
                self._disabled.add(name)
        for key, hold in held.items():
            # Unreadable now: its waiting requests fail alone (404 or 422), as they would anyway.
            with contextlib.suppress(EngineError, OSError):
                hold.host = self._read_host(AdapterRef(*key), keep=False)
        self.pool.unload(name, version)

    def pin(self, name: str, pinned: bool) -> AdapterInfo:
        check_name(name)
        version = self.current_version(name)
        if version is None:
            raise AdapterNotFound(f"adapter {name!r} is not available")
        self.pool.pin(name, pinned)
        if pinned:
            self.pool.warm(self.host_adapter(AdapterRef(name, version)))
        return self.info(name)

    def info(self, name: str) -> AdapterInfo:
        version = self.current_version(name)
        versions = self.store.versions(name) if self.store is not None else []
        key = (name, version) if version is not None else None
        with self._lock:
            host = self._host.get(key) if key else None
            failure = self._failures.get(key) if key else None
        on_device = key is not None and self.pool.is_resident(key)
        tier = "device" if on_device else "host" if host is not None else "disk"
        return AdapterInfo(
            name=name,
            version=version,
            active_version=self.store.active_version(name) if self.store is not None else version,
            versions=versions,
            tier=tier,
            pinned=self.pool.pinned(name),
            loaded_at=self.pool.loaded_at.get(key) if key else None,
            error=failure[1] if failure else None,
            digest=host.digest if host is not None else None,
        )

    def list_adapters(self) -> list[AdapterInfo]:
        names = set(self.store.names()) if self.store is not None else set()
        with self._lock:
            names |= set(self._current)
            names -= self._disabled
        return [self.info(n) for n in sorted(names)]

    def stats(self) -> CacheStats:
        c = self.pool.counters
        resident = self.pool.resident()
        by_scope: dict[str, int] = {}
        for name, _ in resident:
            by_scope[scope_of(name)] = by_scope.get(scope_of(name), 0) + 1
        with self._lock:
            host_count = len(self._host)
        return CacheStats(
            hits=c.hits, misses=c.misses, loads=c.loads, evictions=c.evictions,
            load_seconds_total=c.load_seconds_total, last_load_seconds=c.last_load_seconds,
            resident_device=len(resident), resident_host=host_count,
            max_loras=self.pool.capacity, max_cpu_loras=self.max_cpu_loras,
            host_hits=self.host_hits, host_misses=self.host_misses, host_evictions=self.host_evictions,
            device_bytes=self.pool.nbytes(), rejections=self.rejections, resident_by_scope=by_scope,
        )  # fmt: skip


def _signature(path: Path) -> tuple[float, ...]:
    sig: list[float] = []
    for child in sorted(path.iterdir()) if path.is_dir() else []:
        try:
            st = child.stat()
        except OSError:
            continue
        sig += [st.st_mtime, float(st.st_size), float(st.st_ino)]
    return tuple(sig)


def _short_reason(exc: Exception) -> str:
    if isinstance(exc, AdapterNotFound):
        return "missing"
    if isinstance(exc, AdapterRejected):
        return f"rejected ({exc})"
    return str(exc)
