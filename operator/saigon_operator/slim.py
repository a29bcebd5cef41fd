"""Watch events without metadata.managedFields, from the moment kopf reads them.

kopf queues an object's events until one of its workers takes them; during a bulk apply of
10,000 adapters that is thousands of whole objects at once, and the API server's field-ownership
records are more than half of each parsed adapter (25.7 KiB with them, 11.2 KiB without).
Nothing in the operator reads them. kopf (pinned in pyproject) has no hook between its stream and
its queues, so the one function its queueing calls for listed and watched objects is wrapped, once;
tests/test_slim_k8s.py checks that handlers see objects without them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from kopf._cogs.clients import watching
from saigon_contract.kube import without_managed_fields

_original = watching.infinite_watch


def drop_managed_fields(raw_event: Any) -> Any:
    """The event, its object's managedFields removed in place (bookmarks pass unchanged)."""
    obj = raw_event.get("object") if isinstance(raw_event, dict) else None
    if isinstance(obj, dict):
        without_managed_fields(obj)
    return raw_event


async def _slim_infinite_watch(**kwargs: Any) -> AsyncIterator[Any]:
    async for raw_event in _original(**kwargs):
        yield drop_managed_fields(raw_event)


def install() -> None:
    watching.infinite_watch = _slim_infinite_watch
