"""`python -m saigon_runtime.demo.main`: build prints where the assets are; serve really serves
them (a subprocess on 127.0.0.1) with the cascade and the hot-swap its instructions describe."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_support import call, serve_demo
from openai import OpenAI
from saigon_runtime.demo import MINI, DemoAssets, build_demo_assets
from saigon_runtime.demo.main import main

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> DemoAssets:
    # Same cache entry as test_demo_build's fixture: whichever module runs first builds it.
    return build_demo_assets(tmp_path_factory.getbasetemp() / "demo-cache", scale=MINI, progress=False)


def test_build_reuses_the_cache_and_prints_where_everything_is(
    assets: DemoAssets, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["build", "--scale", "mini", "--cache-dir", str(assets.root.parent), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"Demo assets reused from the cache: {assets.root}" in out
    assert f"SAIGON_BASE_MODEL={assets.base_model_dir}" in out
    assert f"SAIGON_ADAPTERS_DIR={assets.adapters_dir}" in out
    assert "user_alice" in out and "v2 gardening" in out


def test_chat_refuses_urls_that_are_not_http(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "--url", "file:///etc/passwd"]) == 2
    assert "must be an http(s) URL" in capsys.readouterr().err


@pytest.fixture
def served(assets: DemoAssets, tmp_path: Path) -> Iterator[tuple[str, Path, DemoAssets]]:
    with serve_demo(assets, tmp_path) as served:
        yield served


def test_serve_answers_through_the_cascade_and_hot_swaps_alice(served: tuple[str, Path, DemoAssets]) -> None:
    url, log, assets = served
    printed = log.read_text()
    assert f"Serving the demo on {url}" in printed and "/v1/completions" in printed

    prompt = "What should I do this weekend?"
    served_by = {}
    for user in ("alice", "bob", "carol", "zed"):
        status, body = call(f"{url}/api/saigon/infer", {"user_id": user, "input_text": prompt, "temperature": 0})
        assert status == 200, body
        assert body["output"]
        served_by[user] = (body["adapter_used"], body["adapter_active"])
    assert served_by == {
        "alice": ("user_alice", "v1"),
        "bob": ("user_bob", "v1"),
        "carol": ("domain_maritime", "v1"),
        "zed": ("global", "v1"),
    }

    chat = subprocess.run(
        [sys.executable, "-m", "saigon_runtime.demo.main", "chat", "--url", url, "--user", "carol"],
        input="Tell me a short story.\n/user alice\nHello!\n/quit\n",
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "[domain_maritime v1] " in chat.stdout and "[user_alice v1] " in chat.stdout, chat.stdout

    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    models = {m.id for m in client.models.list().data}
    assert {"user_alice", "user_bob", "domain_maritime", "global"} <= models
    reply = client.completions.create(model="global", prompt=prompt, max_tokens=16, temperature=0)
    assert reply.choices[0].text

    # The printed hot-swap command, with the token the demo printed.
    token = re.search(r'authorization: Bearer (\S+)"', printed)
    assert token, printed
    v2 = assets.adapters_dir / "user_alice" / "v2"
    status, body = call(
        f"{url}/api/saigon/adapters/hot-swap", {"user_id": "alice", "new_adapter_path": str(v2)}, token.group(1)
    )
    assert status == 200 and body["success"] and body["previous_version"] == "v1", body
    swapped = body["version"]  # the runtime imports the directory as a content-addressed version
    installed = assets.adapters_dir / "user_alice" / swapped / "adapter_model.safetensors"
    assert installed.read_bytes() == (v2 / "adapter_model.safetensors").read_bytes()
    status, body = call(f"{url}/api/saigon/infer", {"user_id": "alice", "input_text": prompt, "temperature": 0})
    assert status == 200 and (body["adapter_used"], body["adapter_active"]) == ("user_alice", swapped), body
    # Without the token, the admin route refuses.
    assert call(f"{url}/api/saigon/adapters/hot-swap", {"user_id": "alice", "new_adapter_path": str(v2)})[0] == 401
