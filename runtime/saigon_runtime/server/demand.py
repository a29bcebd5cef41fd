"""On-demand loads of a user's adapter this replica does not hold (saigon_contract.demand).

With placement a user's adapter lives on a few replicas, and the router sends the user to one of
them; it sends the user here only when all of them are down. Then the pod's agent fetches, verifies
and loads the adapter while the request waits (up to `demand_timeout_s`), and the request is
answered by the user's own adapter rather than a fallback. One demand per adapter at a time,
however many requests wait for it; an adapter no SaigonAdapter declares is not asked for again for a
few seconds (unknown users cost the agent one question, not one per request).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

import aiohttp
from saigon_contract.demand import DEMAND_PATH, DemandRequest, DemandResult
from saigon_contract.names import is_scope_id

from saigon_runtime.adapters.names import user_adapter
from saigon_runtime.server.state import ServerState

log = logging.getLogger(__name__)

UNKNOWN_HOLD_S = 5.0
MAX_REMEMBERED = 4096
# Demands in flight at once (each may be a download): requests beyond wait their turn.
CONCURRENCY = 4


class OnDemand:
    def __init__(self, url: str, token: str, timeout_s: float) -> None:
        self.url = url.rstrip("/") + DEMAND_PATH
        self.token = token
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._pending: dict[str, asyncio.Task[DemandResult | None]] = {}
        self._unknown_until: OrderedDict[str, float] = OrderedDict()
        self._slots = asyncio.Semaphore(CONCURRENCY)

    async def ensure(self, adapter: str) -> DemandResult | None:
        """Asks the agent to load `adapter`; None when the agent could not be asked."""
        until = self._unknown_until.get(adapter)
        if until is not None and until > time.monotonic():
            return DemandResult(state="unknown")
        task = self._pending.get(adapter)
        if task is None:
            task = asyncio.create_task(self._ask(adapter))
            self._pending[adapter] = task
            task.add_done_callback(lambda _: self._pending.pop(adapter, None))
        # Shielded: a client that goes away does not cancel the load other requests wait for.
        result = await asyncio.shield(task)
        if result is not None and result.state == "unknown":
            self._unknown_until[adapter] = time.monotonic() + UNKNOWN_HOLD_S
            self._unknown_until.move_to_end(adapter)
            while len(self._unknown_until) > MAX_REMEMBERED:
                self._unknown_until.popitem(last=False)
        return result

    async def _ask(self, adapter: str) -> DemandResult | None:
        async with self._slots:
            return await self._post(adapter)

    async def _post(self, adapter: str) -> DemandResult | None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = DemandRequest(adapter=adapter, timeout_s=self.timeout_s).model_dump(mode="json")
        headers = {"Authorization": f"Bearer {self.token}"}
        timeout = aiohttp.ClientTimeout(total=self.timeout_s + 5)
        try:
            async with self._session.post(self.url, json=body, headers=headers, timeout=timeout) as resp:
                if resp.status not in (200, 404):
                    log.warning("on-demand load of an adapter refused by the agent: HTTP %d", resp.status)
                    return None
                return DemandResult.model_validate_json(await resp.read())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("on-demand load of an adapter failed: %s", type(exc).__name__)
            return None

    async def close(self) -> None:
        for task in list(self._pending.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()


async def load_if_missing(state: ServerState, user_id: str | None) -> None:
    """Before a user's cascade is resolved: their adapter, loaded on demand when it is not here."""
    demand = state.demand
    if demand is None or user_id is None or not is_scope_id(user_id):
        return  # (an invalid user id is refused where the cascade resolves it)
    engine = state.ready_engine()
    name = user_adapter(user_id)
    if await asyncio.to_thread(engine.adapters.current_version, name) is None:
        await demand.ensure(name)
