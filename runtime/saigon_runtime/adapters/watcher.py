"""Standalone adapter detection: without the operator, notice new adapters and new `active`
targets in the adapters directory and verify each in the background before it serves."""

from __future__ import annotations

import logging
import threading

from saigon_runtime.adapters.manager import AdapterManager
from saigon_runtime.redact import shown

log = logging.getLogger(__name__)


class AdapterWatcher:
    def __init__(self, manager: AdapterManager, interval_s: float = 2.0) -> None:
        self.manager = manager
        self.interval_s = interval_s
        self.passes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="saigon-adapter-watcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for name, outcome in self.manager.refresh().items():
                    # The reason stays out: it can quote the adapter's name, hence a user id.
                    log.info("adapter %s: %s", shown(name), outcome.split(":", 1)[0])
            except Exception:
                log.exception("adapter directory scan failed")
            self.passes += 1
            self._stop.wait(self.interval_s)
