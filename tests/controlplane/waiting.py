"""Polling for conditions that a real API server reaches asynchronously."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    probe: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.2,
    what: str = "",
    *,
    details: Callable[[], str] | None = None,
    give_up: Callable[[], bool] | None = None,
) -> T:
    """Calls `probe` until it returns a truthy value, and returns that value.

    Exceptions raised by `probe` count as "not yet"; after `timeout` seconds, or as soon as
    `give_up()` is true (the process that should get there died), an AssertionError reports
    the last value or exception, followed by `details()`.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except Exception as error:
            last = error
        if time.monotonic() > deadline or (give_up is not None and give_up()):
            message = f"{what or probe!r} not reached within {timeout}s; last: {last!r}"
            raise AssertionError(message + (f"\n{details()}" if details is not None else ""))
        time.sleep(interval)
