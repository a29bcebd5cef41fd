"""Publishes this pod's report (annotation) and readiness gate (pod condition), debounced.

Writes always carry the full current state, so a failed write is simply retried
and nothing is lost between writes. A report's cost grows with the adapters it lists (encoding
here, a watch event and a decode in the operator), so writes are spaced by a multiple of the
last encoding's time: 50 ms apart with a few adapters, about a second apart with 10,000.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import UTC, datetime

from saigon_contract import resources as r
from saigon_contract.kube import ApiError, KubeClient, object_path
from saigon_contract.reports import AdapterReport, PodReport, ReportTooLarge

log = logging.getLogger(__name__)
# Writes are spaced by the report's encoding time: at most a thirtieth of the time between writes
# goes to encoding, and the operator, which decodes every write, gets as much room. A few adapters:
# milliseconds apart; thousands: about a second.
SPACING_PER_ENCODE = 30


class PodReporter:
    def __init__(self, kube: KubeClient, namespace: str, pod: str, *, debounce_s: float = 0.05) -> None:
        self.kube = kube
        self.path = object_path("Pod", namespace, pod)
        self.debounce_s = debounce_s
        self._adapters: dict[str, AdapterReport] = {}
        self._synced = False
        self._blocked: str | None = None
        self._published_gate: tuple[str, str, str] | None = None
        self._published_report: str | None = None
        self._encode_s = 0.0
        self._changed = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def seed(self, report: PodReport) -> None:
        """Starts from what this pod last published (an agent restart must not blank the report)."""
        self._adapters = dict(report.adapters)
        self._synced = report.synced
        self._published_report = report.encode() if report.adapters or report.synced else None

    async def load_published(self) -> PodReport:
        pod = await self.kube.get(self.path)
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        return PodReport.decode(annotations.get(r.REPORT_ANNOTATION))

    @property
    def synced(self) -> bool:
        return self._synced

    def get(self, name: str) -> AdapterReport | None:
        return self._adapters.get(name)

    def names(self) -> set[str]:
        return set(self._adapters)

    def states(self) -> Counter[str]:
        """How many adapters are in each state (counts only: names carry user ids)."""
        return Counter(str(report.state) for report in self._adapters.values())

    def set(self, name: str, report: AdapterReport) -> None:
        if self._adapters.get(name) != report:
            self._adapters[name] = report
            self._mark()

    def remove(self, name: str) -> None:
        if self._adapters.pop(name, None) is not None:
            self._mark()

    def set_synced(self, synced: bool) -> None:
        if synced != self._synced:
            self._synced = synced
            self._mark()

    @property
    def blocked(self) -> str | None:
        return self._blocked

    def set_blocked(self, reason: str | None) -> None:
        """Why this agent cannot do its job (its watch fails), or None: the pod is not ready meanwhile."""
        if reason != self._blocked:
            if reason:
                log.error("the agent is blocked: %s", reason)
            self._blocked = reason
            self._mark()

    def _gate(self) -> tuple[str, str, str]:
        if self._blocked:
            return "False", "WatchFailed", self._blocked[:1024]
        if self._synced:
            return "True", "AdaptersLoaded", "every adapter this pod must serve has been handled"
        return "False", "Syncing", "loading the adapters this pod must serve"

    def _mark(self) -> None:
        self._idle.clear()
        self._changed.set()

    async def wait_published(self) -> None:
        await self._idle.wait()

    async def run(self) -> None:
        delay = 0.5
        while True:
            await self._changed.wait()
            await asyncio.sleep(max(self.debounce_s, SPACING_PER_ENCODE * self._encode_s))
            self._changed.clear()
            try:
                await self._publish()
                delay = 0.5
                if not self._changed.is_set():
                    self._idle.set()
            except (ApiError, ReportTooLarge) as exc:
                log.warning("publishing the pod report failed (will retry): %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                self._changed.set()

    async def _publish(self) -> None:
        started = time.perf_counter()
        report = PodReport(adapters=dict(self._adapters), synced=self._synced).encode()
        self._encode_s = time.perf_counter() - started
        if report != self._published_report:
            await self.kube.merge_patch(self.path, {"metadata": {"annotations": {r.REPORT_ANNOTATION: report}}})
            self._published_report = report
        gate = self._gate()
        if gate != self._published_gate:
            status, reason, message = gate
            cond = {
                "type": r.READINESS_GATE,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            await self.kube.strategic_patch(self.path + "/status", {"status": {"conditions": [cond]}})
            self._published_gate = gate
