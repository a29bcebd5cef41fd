"""How long to wait before trying a failed API call again, and how many times a handler tries."""

from __future__ import annotations

# Handler attempts (SaigonModels' kopf handlers, SaigonAdapters' reconciles): with backoff up to
# 60 s, about half an hour; then the handler gives up until the object changes.
RETRIES = 30


def backoff(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential: base, 2*base, 4*base, ... up to cap (attempt 0 is the first retry)."""
    return float(min(cap, base * 2 ** min(attempt, 16)))
