"""An agent serves the user adapters placed on its pod (status.placement) and every shared one; an
adapter placed elsewhere stays for the linger time (the router follows a new placement late), then goes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from controlplane.processes import free_port
from saigon_agent.app import start_health
from saigon_agent.config import AgentConfig
from saigon_agent.store import AdapterStore
from saigon_contract.demand import DEMAND_PATH
from test_agent_syncer_race import TOKEN, SlowListingRuntime, adapter_object, syncing, wait_until


def agent_config(tmp_path: Path, pod: str) -> AgentConfig:
    """The agent's settings for its health and /demand port (a free one), with the tests' admin token."""
    return AgentConfig(
        namespace="ns", pod_name=pod, model="llama", adapters_dir=tmp_path / "adapters",
        runtime_url="http://127.0.0.1:1", admin_token=TOKEN, health_host="127.0.0.1", health_port=free_port(),
    )  # fmt: skip


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


async def test_an_adapter_placed_elsewhere_is_loaded_on_demand_and_kept_for_the_linger_time(tmp_path: Path) -> None:
    runtime = SlowListingRuntime(list_delay_s=0.01, load_delay_s=0.01)
    config = agent_config(tmp_path, "llama-a")
    url = f"http://127.0.0.1:{config.health_port}{DEMAND_PATH}"
    async with syncing(tmp_path, runtime, pod="llama-a", linger_s=1.0) as (syncer, reporter):
        await syncer.on_relist([placed(0, ["llama-b", "llama-c"])])
        await wait_until(lambda: reporter.synced, 30, "the pod becomes ready")
        assert runtime.loaded == {}
        health = await start_health(config, reporter, syncer)
        try:
            async with aiohttp.ClientSession() as http:
                auth = {"Authorization": f"Bearer {TOKEN}"}
                refused = [
                    (await http.post(url, json={"adapter": "user_u0"})).status,
                    (await http.post(url, json={"adapter": "user_u0"}, headers={"Authorization": "Bearer x"})).status,
                    (await http.post(url, data=b"{", headers=auth)).status,
                    (await http.post(url, json={"adapter": "user_../x"}, headers=auth)).status,
                    (await http.post(url, json={"adapter": "user_u0", "extra": 1}, headers=auth)).status,
                ]
                assert refused == [401, 401, 400, 400, 400]
                unknown = await http.post(url, json={"adapter": "user_nobody"}, headers=auth)
                assert unknown.status == 404 and (await unknown.json())["state"] == "unknown"
                async with http.post(url, json={"adapter": "user_u0", "timeout_s": 20}, headers=auth) as resp:
                    assert resp.status == 200
                    assert await resp.json() == {"state": "loaded", "version": "v1", "reason": None}
                demanded_at = time.monotonic()
                assert runtime.loaded == {"user_u0": "v1"} and runtime.loads["user_u0"] == 1
                # Asked again: already here, nothing loads twice.
                again = await http.post(url, json={"adapter": "user_u0"}, headers=auth)
                assert (await again.json())["state"] == "loaded" and runtime.loads["user_u0"] == 1
        finally:
            await health.cleanup()
        await wait_until(lambda: "user_u0" not in runtime.loaded, 10, "user_u0 let go after the linger time")
        assert time.monotonic() - demanded_at >= 0.9
        await syncer.idle()
        assert reporter.get("user_u0") is None
    assert reporter.changes == [True], "readiness flickered"


async def test_readiness_holds_while_an_adapter_placed_elsewhere_is_being_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runtime listings keep coming while the files of an unloaded adapter are deleted (slowly here):
    none may read the adapter as lost by the runtime and close the pod's readiness gate."""
    remove = AdapterStore.remove

    def slow_remove(store: AdapterStore, name: str) -> None:
        time.sleep(0.3)
        remove(store, name)

    monkeypatch.setattr(AdapterStore, "remove", slow_remove)
    runtime = SlowListingRuntime(list_delay_s=0.0, load_delay_s=0.01)
    async with syncing(tmp_path, runtime, pod="llama-a", linger_s=0.1) as (syncer, reporter):
        await syncer.on_relist([placed(0, ["llama-a"]), placed(1, ["llama-a"])])
        await wait_until(lambda: reporter.synced, 30, "the pod becomes ready")
        await syncer.idle()
        syncer.on_object(placed(0, ["llama-b"]))
        await wait_until(lambda: reporter.get("user_u0") is None, 10, "user_u0 removed")
        await asyncio.sleep(0.1)
        await syncer.idle()
        assert runtime.loads == {"user_u0": 1, "user_u1": 1}
    assert reporter.changes == [True], "readiness flickered"
