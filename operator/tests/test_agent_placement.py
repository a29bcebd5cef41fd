"""An agent serves the user adapters placed on its pod (status.placement) and every shared one; an
adapter placed elsewhere stays for the linger time (the router follows a new placement late), then goes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from test_agent_syncer_race import SlowListingRuntime, adapter_object, syncing, wait_until


def placed(i: int, pods: list[str] | None) -> dict[str, Any]:
    obj = adapter_object(i)
    if pods is not None:
        obj["status"]["placement"] = {"allReplicas": False, "slot": i, "pods": pods}
    return obj


async def test_only_placed_adapters_load_and_one_placed_elsewhere_lingers_then_goes(tmp_path: Path) -> None:
    runtime = SlowListingRuntime(list_delay_s=0.01, load_delay_s=0.01)
    here, there = "llama-a", "llama-b"
    async with syncing(tmp_path, runtime, pod=here, linger_s=0.6) as (syncer, reporter):
        objects = [placed(0, [here, there]), placed(1, [there]), placed(2, None)]
        await syncer.on_relist(objects)
        await wait_until(lambda: reporter.synced, 30, "the pod becomes ready")
        await syncer.idle()
        assert set(runtime.loaded) == {"user_u0", "user_u2"}  # user_u1 lives on llama-b only
        assert reporter.get("user_u1") is None and not (tmp_path / "adapters" / "user_u1").exists()
        # The placement moves user_u0 away: still served for the linger time, then unloaded and deleted.
        moved_at = time.monotonic()
        syncer.on_object(placed(0, [there]))
        await asyncio.sleep(0.3)
        assert "user_u0" in runtime.loaded and (tmp_path / "adapters" / "user_u0").exists()
        await wait_until(lambda: "user_u0" not in runtime.loaded, 10, "user_u0 unloaded")
        assert time.monotonic() - moved_at >= 0.6
        await syncer.idle()
        assert not (tmp_path / "adapters" / "user_u0").exists() and reporter.get("user_u0") is None
        # Placed here again before the linger ends: kept, never reloaded.
        syncer.on_object(placed(1, [here]))
        await wait_until(lambda: "user_u1" in runtime.loaded, 10, "user_u1 loaded")
        syncer.on_object(placed(1, [there]))
        await asyncio.sleep(0.2)
        syncer.on_object(placed(1, [here, there]))
        await asyncio.sleep(0.8)
        await syncer.idle()
        assert "user_u1" in runtime.loaded and runtime.loads["user_u1"] == 1
    assert reporter.changes == [True], "readiness flickered"
