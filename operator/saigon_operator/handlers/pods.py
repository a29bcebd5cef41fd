"""Runtime pods: their reports feed SaigonAdapter and SaigonModel status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from saigon_contract import resources as r

from saigon_operator.handlers.context import OperatorContext
from saigon_operator.status import PodView, pod_view


def index_key(body: Mapping[str, Any]) -> tuple[str, str] | None:
    model = (body.get("metadata", {}).get("labels") or {}).get(r.MODEL_LABEL)
    return (body["metadata"]["namespace"], model) if model else None


def observe(event_type: str | None, body: Mapping[str, Any], ctx: OperatorContext) -> None:
    key = index_key(body)
    if key is None:
        return
    view: PodView | None = None if event_type == "DELETED" else pod_view(body)
    ctx.aggregator.observe_pod(key[0], key[1], view, body["metadata"]["name"])
