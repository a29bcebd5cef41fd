"""PEFT's `rank_pattern`/`alpha_pattern` keys, matched on a linear-time engine.

PEFT matches each key with `re.match(rf"(.*\\.)?({key})$", module)` and takes the first key
that matches (peft.utils.other.get_pattern_key). The keys come from whoever wrote the adapter,
and Python's backtracking engine can take exponential time on them while holding the GIL, so
here they run on RE2 (google-re2): the same anchoring (a full match of `(.*\\.)?(key)`; module
names hold no newline, so `$` and the end of text agree), linear time, and bounded compile
memory. Keys RE2 cannot compile (backreferences, lookarounds) or that are too big are refused.
"""

from __future__ import annotations

from collections.abc import Mapping

import re2

MAX_PATTERN_CHARS = 512
MAX_PATTERNS = 256
# RE2 refuses a pattern whose compiled program needs more memory than this (e.g. `(.{999}){999}`).
_MAX_PROGRAM_BYTES = 1 << 20


class PatternError(ValueError):
    """A pattern key the runtime will not run; the message names the field and the key."""


def _options() -> re2.Options:
    options = re2.Options()
    options.max_mem = _MAX_PROGRAM_BYTES
    options.log_errors = False
    return options


_OPTIONS = _options()


class PatternTable:
    """Pattern keys in config order, compiled once; `value_for` returns the first key's value."""

    def __init__(self, patterns: Mapping[str, float], *, field: str) -> None:
        if len(patterns) > MAX_PATTERNS:
            raise PatternError(f"{field}: more than {MAX_PATTERNS} patterns")
        self._compiled: list[tuple[re2._Regexp, float]] = []
        for key, value in patterns.items():
            if len(key) > MAX_PATTERN_CHARS:
                raise PatternError(f"{field}: a pattern is longer than {MAX_PATTERN_CHARS} characters")
            try:
                compiled = re2.compile(rf"(.*\.)?({key})", _OPTIONS)
            except re2.error as exc:
                raise PatternError(
                    f"{field}: pattern {_preview(key)} is not a supported regular expression ({_reason(exc)})"
                ) from None
            self._compiled.append((compiled, value))

    def __len__(self) -> int:
        return len(self._compiled)

    def value_for(self, module: str, default: float) -> float:
        for compiled, value in self._compiled:
            if compiled.fullmatch(module) is not None:
                return value
        return default


def _reason(exc: re2.error) -> str:
    detail = exc.args[0] if exc.args else exc
    return detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)


def _preview(key: str) -> str:
    return repr(key if len(key) <= 40 else key[:37] + "...")
