"""Runtime pods: their reports feed SaigonAdapter and SaigonModel status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from saigon_operator.handlers.context import OperatorContext
from saigon_operator.indexes import pod_model
from saigon_operator.status import pod_view


def observe(event_type: str | None, body: Mapping[str, Any], ctx: OperatorContext) -> None:
    model = pod_model(body)
    if model is None:
        return
    name = body["metadata"]["name"]
    view = None if event_type == "DELETED" else pod_view(body, ctx.pods.get(model, name))
    old = ctx.pods.put(model, name, view)
    ctx.aggregator.observe_pod(model, old, view)
    if old != view:
        ctx.routing.mark(model)
