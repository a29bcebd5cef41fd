"""The shared logging setup: text or one JSON object per record, chosen by flag or environment."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from saigon_contract.logs import JsonFormatter, log_format, setup_logging


def test_the_flag_wins_then_the_environment_then_text() -> None:
    assert log_format("json", {"SAIGON_LOG_FORMAT": "text"}) == "json"
    assert log_format(None, {"SAIGON_LOG_FORMAT": "json"}) == "json"
    assert log_format(None, {}) == "text"
    with pytest.raises(ValueError, match="SAIGON_LOG_FORMAT='xml'"):
        log_format(None, {"SAIGON_LOG_FORMAT": "xml"})


def test_json_records_are_one_parseable_line_with_the_exception() -> None:
    logger = logging.getLogger("saigon.test")
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        record = logger.makeRecord("saigon.test", logging.ERROR, __file__, 1, "failed: %s", ("x",), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "ERROR" and parsed["logger"] == "saigon.test" and parsed["message"] == "failed: x"
    assert "RuntimeError: boom" in parsed["exception"]
    assert parsed["time"].endswith("+00:00")


def test_setup_replaces_the_root_handlers(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("WARNING", "json")
        logging.getLogger("saigon.x").info("hidden")
        logging.getLogger("saigon.x").warning("shown %d", 1)
        lines = capsys.readouterr().err.strip().splitlines()
        assert [json.loads(line)["message"] for line in lines] == ["shown 1"]
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
