"""The device tier: adapters resident on the compute device, LRU, within a byte budget.

The budget is in bytes, so it holds many low-rank adapters or fewer high-rank ones: the ranks
actually present decide (see engine/memory.py for how the budget is sized). An explicit
`max_slots` (SAIGON_CACHE_SIZE) also caps the count.

Loading into a slot only copies tensors; no module is created and the base model is
untouched. A slot held by a running request (refcount > 0) or pinned is never evicted.
All methods are thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import torch

from saigon_runtime.adapters.format import HostAdapter
from saigon_runtime.adapters.types import DeviceAdapter
from saigon_runtime.errors import AdapterRejected, PinLimitReached

Key = tuple[str, str]


@dataclass
class PoolCounters:
    hits: int = 0
    misses: int = 0
    loads: int = 0
    evictions: int = 0
    load_seconds_total: float = 0.0
    last_load_seconds: float = 0.0


class SlotPool:
    def __init__(
        self,
        max_slots: int | None,
        device: torch.device,
        *,
        byte_budget: int | None = None,
        nominal_adapter_bytes: int = 1,
    ) -> None:
        if max_slots is not None and max_slots < 1:
            raise ValueError("max_loras must be at least 1")
        if max_slots is None and byte_budget is None:
            raise ValueError("a slot pool needs max_slots, a byte budget, or both")
        self.max_slots = max_slots
        self.byte_budget = byte_budget
        # The size assumed for the count it reports until adapters are resident.
        self.nominal_adapter_bytes = max(1, nominal_adapter_bytes)
        self.device = device
        self._bytes = 0
        self.counters = PoolCounters()
        self._resident: OrderedDict[Key, DeviceAdapter] = OrderedDict()
        self._refs: dict[Key, int] = {}
        self._pinned: set[str] = set()
        self._doomed: set[Key] = set()  # unloaded while in use: freed on last release
        self._lock = threading.Lock()
        self.loaded_at: dict[Key, float] = {}

    def try_acquire(self, host: HostAdapter, *, transient: bool = False) -> DeviceAdapter | None:
        """The adapter's slot with one more reference, or None when every slot is busy.
        A `transient` one (its version was unloaded) goes at its last release."""
        key = (host.name, host.version)
        with self._lock:
            dev = self._resident.get(key)
            # An unloaded slot (doomed: still in use) also serves the requests that resolved its
            # version before the unload (versions are immutable); it goes at its last release.
            if dev is not None:
                self.counters.hits += 1
                if key not in self._doomed:
                    self._resident.move_to_end(key)
                self._refs[key] = self._refs.get(key, 0) + 1
                return dev
            if self.byte_budget is not None and host.nbytes > self.byte_budget:
                raise AdapterRejected(
                    f"adapter {host.name!r} needs {host.nbytes / 2**20:.1f} MiB on the device, more than "
                    f"the whole adapter budget of {self.byte_budget / 2**20:.1f} MiB"
                )
            while not self._fits(host.nbytes):
                if not self._evict_one():
                    return None
            self.counters.misses += 1
            dev = self._copy_in(host)
            self._resident[key] = dev
            self._bytes += dev.nbytes
            self._refs[key] = 1
            if transient:
                self._doomed.add(key)
            return dev

    def release(self, dev: DeviceAdapter) -> None:
        with self._lock:
            left = self._refs.get(dev.key, 0) - 1
            self._refs[dev.key] = max(left, 0)
            if left <= 0 and dev.key in self._doomed:
                self._drop(dev.key)

    def warm(self, host: HostAdapter) -> bool:
        """Make an adapter resident without holding it (preload). False when no slot is free."""
        with self._lock:
            self._doomed.discard((host.name, host.version))  # loaded again: wanted after all
        dev = self.try_acquire(host)
        if dev is None:
            return False
        self.release(dev)
        return True

    @property
    def max_pins(self) -> int:
        """One slot always stays unpinned, or every other adapter would wait for a slot forever."""
        return self.capacity - 1

    def pin(self, name: str, pinned: bool) -> None:
        limit = self.max_pins  # `capacity` takes the lock itself
        with self._lock:
            if not pinned:
                self._pinned.discard(name)
                return
            if name not in self._pinned and len(self._pinned) >= limit:
                raise PinLimitReached(
                    f"at most {limit} adapters may be pinned: {limit + 1} adapters fit in the device slots "
                    "and one stays free for the unpinned adapters"
                )
            self._pinned.add(name)

    def unload(self, name: str, version: str | None = None) -> int:
        """Free the slots of a name (or one version); in-use slots go when released."""
        with self._lock:
            keys = [k for k in self._resident if k[0] == name and (version is None or k[1] == version)]
            for key in keys:
                if self._refs.get(key, 0) > 0:
                    self._doomed.add(key)
                else:
                    self._drop(key)
            return len(keys)

    def evict_idle(self) -> int:
        """Free every slot that no running request holds and that is not pinned."""
        with self._lock:
            idle = [k for k in self._resident if self._refs.get(k, 0) == 0 and k[0] not in self._pinned]
            for key in idle:
                self._drop(key)
                self.counters.evictions += 1
            return len(idle)

    def is_resident(self, key: Key) -> bool:
        with self._lock:
            return key in self._resident and key not in self._doomed

    def resident(self) -> list[Key]:
        with self._lock:
            return [k for k in self._resident if k not in self._doomed]

    def pinned(self, name: str) -> bool:
        with self._lock:
            return name in self._pinned

    def in_use_names(self) -> list[str]:
        """Names whose slots running requests hold now."""
        with self._lock:
            return sorted({k[0] for k, n in self._refs.items() if n > 0})

    def in_use(self) -> int:
        with self._lock:
            return sum(1 for n in self._refs.values() if n > 0)

    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    @property
    def capacity(self) -> int:
        """Adapters that fit at once: `max_slots`, or the byte budget over the largest resident
        adapter (the nominal size while none is)."""
        if self.byte_budget is None:
            assert self.max_slots is not None
            return self.max_slots
        with self._lock:
            largest = max((d.nbytes for d in self._resident.values()), default=self.nominal_adapter_bytes)
        fit = max(1, self.byte_budget // max(1, largest))
        return fit if self.max_slots is None else min(fit, self.max_slots)

    def _fits(self, nbytes: int) -> bool:
        if self.max_slots is not None and len(self._resident) >= self.max_slots:
            return False
        return self.byte_budget is None or self._bytes + nbytes <= self.byte_budget

    def _evict_one(self) -> bool:
        for key in self._resident:  # oldest first
            if self._refs.get(key, 0) == 0 and key[0] not in self._pinned:
                self._drop(key)
                self.counters.evictions += 1
                return True
        return False

    def _drop(self, key: Key) -> None:
        self._bytes -= self._resident.pop(key).nbytes
        self._refs.pop(key, None)
        self._doomed.discard(key)
        self.loaded_at.pop(key, None)

    def _copy_in(self, host: HostAdapter) -> DeviceAdapter:
        start = time.perf_counter()
        non_blocking = self.device.type == "cuda"
        modules = {
            m: (a.to(self.device, non_blocking=non_blocking, copy=True),
                b.to(self.device, non_blocking=non_blocking, copy=True))
            for m, (a, b) in host.modules.items()
        }  # fmt: skip
        if non_blocking:
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        self.counters.loads += 1
        self.counters.load_seconds_total += elapsed
        self.counters.last_load_seconds = elapsed
        self.loaded_at[(host.name, host.version)] = time.time()
        return DeviceAdapter(key=(host.name, host.version), modules=modules, rank=host.max_rank, nbytes=host.nbytes)
