"""`python -m saigon_runtime.demo.main menu` driven through piped stdin against the real demo server
(MINI assets, served by `serve` in a subprocess): every menu item, and end of input mid-way."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_support import serve_demo
from saigon_runtime.demo import MINI, DemoAssets, build_demo_assets

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, DemoAssets]]:
    # Same cache entry as the other demo tests: whichever module runs first builds it.
    assets = build_demo_assets(tmp_path_factory.getbasetemp() / "demo-cache", scale=MINI, progress=False)
    with serve_demo(assets, tmp_path_factory.mktemp("menu")) as (url, log, served_assets):
        token = re.search(r"--admin-token (\S+)", log.read_text())
        assert token, log.read_text()
        yield url, token.group(1), served_assets


def run_menu(served: tuple[str, str, DemoAssets], stdin: str) -> subprocess.CompletedProcess[str]:
    url, token, assets = served
    command = [sys.executable, "-m", "saigon_runtime.demo.main", "menu", "--url", url, "--admin-token", token]
    return subprocess.run(
        [*command, "--adapters-dir", str(assets.adapters_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def section(out: str, title: str) -> str:
    start = out.index(f"== {title} ==")
    end = out.find("\nSaigon demo", start)
    return out[start:end]


def test_every_menu_item_with_piped_input(served: tuple[str, str, DemoAssets]) -> None:
    script = [
        *("1", "alice", "What should I do this weekend?"),
        *("1", "carol", ""),  # an empty answer takes the default prompt
        *("2", "y"),
        *("3", "list", "pin user_bob", "unload global", "load global", "load no_such_adapter", "list", "status", ""),
        "4",
        *("5", "alice", "Hello!", "Tell me something interesting.", "/back"),
        "7",
        "q",
    ]
    result = run_menu(served, "\n".join(script) + "\n")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Traceback" not in out + result.stderr

    basic = out.split("== basic inference ==")
    assert "adapter:  user_alice v1 (scope user)" in basic[1] and "mesh context used: " in basic[1]
    assert "adapter:  domain_maritime v1 (scope domain)" in basic[2]
    assert re.search(r"latency:  \d+ ms", basic[1])

    swap = section(out, "hot-swap")
    new = re.search(r"Swapped: user_alice v1 -> (\w+)", swap)
    assert new, swap
    in_flight = re.findall(r"request \d \(in flight, finished (?:before|after) the swap\): user_alice (\w+):", swap)
    assert len(in_flight) == 6 and set(in_flight) <= {"v1", new.group(1)}, swap
    assert re.findall(r"request after the swap: user_alice (\w+):", swap) == [new.group(1)] * 2, swap
    assert f"Answers after the swap all come from {new.group(1)}: yes" in swap
    assert "Swapped back: user_alice is on v1 again." in swap

    adapters = section(out, "adapter management")
    rows = re.findall(r"^  (\w+)\s+(\w+)\s+(device|host|disk)\s+(yes|no)$", adapters, re.M)
    names = {name for name, *_ in rows}
    assert {"user_alice", "user_bob", "domain_maritime", "global"} <= names, adapters
    assert ("user_bob", "v1", "device", "yes") in rows  # pinned, so resident on the device
    assert "user_bob pinned" in adapters and "unloaded global" in adapters and "loaded global v1" in adapters
    assert "! HTTP 404 not_found_error:" in adapters and "no_such_adapter" in adapters
    assert re.search(r"hits \d+, misses \d+, loads \d+", adapters)

    perf = section(out, "performance test")
    assert re.search(r"ratio cold/warm: \d+\.\d\dx", perf), perf
    assert re.search(r"ratio one-at-a-time/batched: \d+\.\d\dx", perf), perf
    assert "[user_alice v1, user_bob v1, domain_maritime v1, global v1]" in perf

    chat = section(out, "interactive chat")
    assert len(re.findall(r"\[user_alice v1\] \S", chat)) == 2, chat  # back on v1 after the swap back
    assert "? choose 1-5" in out


def test_end_of_input_mid_chat_leaves_cleanly(served: tuple[str, str, DemoAssets]) -> None:
    result = run_menu(served, "5\nbob\nHello!\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[user_bob v1] " in result.stdout
    assert "Traceback" not in result.stderr


def test_a_server_that_is_not_there_is_an_error_message_not_a_traceback(tmp_path: Path) -> None:
    from demo_support import free_port

    command = [sys.executable, "-m", "saigon_runtime.demo.main", "menu", "--url", f"http://127.0.0.1:{free_port()}"]
    result = subprocess.run(
        [*command, "--adapters-dir", str(tmp_path)], input="1\nalice\nhi\n3\nq\n", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "! cannot reach http://127.0.0.1:" in result.stdout
    assert "! this needs the admin token" in result.stdout
    assert "Traceback" not in result.stderr
