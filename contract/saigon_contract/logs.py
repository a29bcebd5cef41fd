"""Logging for every Saigon process (runtime, operator, agent): one pair of flags, and a choice
of plain text or JSON lines (one object per record, what log collectors parse without rules)."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
from collections.abc import Mapping

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
LOG_FORMAT_ENV = "SAIGON_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def add_logging_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level", type=str.upper, choices=LEVELS, default="INFO", help="DEBUG, INFO, WARNING or ERROR"
    )
    parser.add_argument(
        "--log-format", choices=FORMATS, default=None, help=f"text or json lines ({LOG_FORMAT_ENV}, default text)"
    )


def log_format(flag: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The flag, else the environment variable, else text; an unknown word is a ValueError naming it."""
    if flag:
        return flag
    raw = (os.environ if environ is None else environ).get(LOG_FORMAT_ENV, "") or "text"
    if raw not in FORMATS:
        raise ValueError(f"{LOG_FORMAT_ENV}={raw!r}: one of {', '.join(FORMATS)}")
    return raw


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
