"""A configuration mistake gets one plain line that names the flag or variable, and a non-zero
exit: never a traceback. Each CLI runs as a user runs it, as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

CASES = [
    pytest.param(["saigon-runtime", "serve"], {"SAIGON_PORT": "abc"}, "SAIGON_PORT", id="runtime-port-env"),
    pytest.param(["saigon-runtime", "serve"], {"SAIGON_LOG_PROMPTS": "maybe"}, "SAIGON_LOG_PROMPTS", id="runtime-bool"),
    pytest.param(["saigon-runtime", "serve", "--port", "abc"], {}, "--port", id="runtime-port-flag"),
    pytest.param(["saigon-runtime", "--log-level", "LOUD", "serve"], {}, "--log-level", id="runtime-log-level"),
    pytest.param(["saigon-runtime", "--log-format", "xml", "serve"], {}, "--log-format", id="runtime-log-format"),
    pytest.param(["saigon-runtime", "serve"], {"SAIGON_LOG_FORMAT": "xml"}, "SAIGON_LOG_FORMAT", id="runtime-fmt-env"),
    pytest.param(
        ["saigon-operator", "run", "--agent-image", "x", "--kubeconfig", "/nonexistent/kubeconfig"],
        {},
        "/nonexistent/kubeconfig",
        id="operator-kubeconfig",
    ),
    pytest.param(
        ["saigon-operator", "run", "--agent-image", "x", "--log-level", "LOUD"], {}, "--log-level", id="operator-level"
    ),
    pytest.param(["saigon-operator", "run"], {"SAIGON_AGENT_IMAGE": ""}, "--agent-image", id="operator-agent-image"),
    pytest.param(
        ["saigon-operator", "run", "--agent-image", "x", "--workers", "0"],
        {},
        "--workers: 0 is below the minimum 1",
        id="operator-workers",
    ),
    pytest.param(["saigon-agent", "run", "--log-level", "LOUD"], {}, "--log-level", id="agent-log-level"),
    pytest.param(["saigon-agent", "run"], {}, "SAIGON_AGENT_", id="agent-no-config"),
]


@pytest.mark.parametrize(("argv", "env", "named"), CASES)
def test_a_configuration_mistake_is_one_line_naming_the_setting(
    argv: list[str], env: dict[str, str], named: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SAIGON_", "KUBECONFIG", "KUBERNETES_"))}
    result = subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert named in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr


def test_json_logs_are_one_object_per_line_from_a_real_runtime(tmp_path: Path) -> None:
    """`--log-format json` on a runtime whose base model cannot load: every line it logs parses."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAIGON_")}
    with subprocess.Popen(
        [str(BIN / "saigon-runtime"), "--log-format", "json", "serve", "--port", "0",
         "--base-model", str(tmp_path / "missing"), "--adapters-dir", str(tmp_path / "adapters")],
        env=clean, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
    ) as proc:  # fmt: skip
        try:
            records = []
            assert proc.stderr is not None
            for line in proc.stderr:
                records.append(json.loads(line))
                if "failed to load" in records[-1]["message"]:
                    break
        finally:
            proc.kill()
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert records[-1]["level"] == "ERROR"
