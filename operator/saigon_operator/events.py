"""Kubernetes Events for user-visible transitions (posted by the operator itself, best effort)."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from saigon_contract.kube import ApiError, KubeClient, object_path
from saigon_contract.status import now_iso

log = logging.getLogger(__name__)


class EventRecorder:
    def __init__(self, kube: KubeClient, component: str = "saigon-operator") -> None:
        self.kube = kube
        self.component = component

    async def post(self, ref: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """`ref`: apiVersion, kind, name, namespace, uid of the object the event is about."""
        namespace = ref["namespace"]
        now = now_iso()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{ref['name']}.{secrets.token_hex(8)}", "namespace": namespace},
            "involvedObject": {k: ref[k] for k in ("apiVersion", "kind", "name", "namespace", "uid") if ref.get(k)},
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.kube.create(object_path("Event", namespace), body)
        except ApiError as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, namespace, ref["name"], exc)
