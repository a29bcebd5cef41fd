"""The operator's in-memory indexes: runtime pods per model, and claims on adapter names.

They replace kopf's `@kopf.index`: kopf holds every object until all objects of every
indexed kind are indexed, and an object waits for that while it holds one of
`settings.queueing.worker_limit` workers, so with more objects than workers a restarted
operator never gets going (kopf issue #1243). These are fed by the operator's own
informers (saigon_operator.informers) instead, which startup waits for once.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from saigon_contract import names
from saigon_contract import resources as r

from saigon_operator.status import PodView

Key = tuple[str, str]  # (namespace, name)
ClaimKey = tuple[str, str, str]  # (namespace, model, adapter name)


@dataclass(frozen=True)
class Claim:
    """One SaigonAdapter's claim on an adapter name within its model."""

    created: str
    name: str
    deleting: bool


def claim_key(body: Mapping[str, Any]) -> ClaimKey | None:
    spec = body.get("spec") or {}
    try:
        adapter = names.adapter_name(spec.get("scope") or {})
    except names.InvalidName:
        return None
    model = (spec.get("modelRef") or {}).get("name")
    if not isinstance(model, str):
        return None
    return body["metadata"]["namespace"], model, adapter


def claim_of(body: Mapping[str, Any]) -> Claim:
    meta = body["metadata"]
    return Claim(str(meta.get("creationTimestamp", "")), meta["name"], bool(meta.get("deletionTimestamp")))


def pod_model(body: Mapping[str, Any]) -> Key | None:
    """(namespace, model) of a runtime pod, from its label."""
    model = (body.get("metadata", {}).get("labels") or {}).get(r.MODEL_LABEL)
    return (body["metadata"]["namespace"], model) if model else None


class AdapterClaims:
    def __init__(self) -> None:
        self._by_key: dict[ClaimKey, dict[str, Claim]] = {}
        self._key_of: dict[Key, ClaimKey] = {}

    def put(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        self.drop(meta["namespace"], meta["name"])
        key = claim_key(body)
        if key is not None:
            self._by_key.setdefault(key, {})[meta["name"]] = claim_of(body)
            self._key_of[(meta["namespace"], meta["name"])] = key

    def drop(self, namespace: str, name: str) -> None:
        key = self._key_of.pop((namespace, name), None)
        if key is not None:
            claims = self._by_key.get(key, {})
            claims.pop(name, None)
            if not claims:
                self._by_key.pop(key, None)

    def retain(self, namespace: str | None, present: Collection[Key]) -> None:
        """After a relist of `namespace` (None: every namespace), whose objects were each put:
        drops the claims of the objects there that are gone."""
        for ns, name in [k for k in self._key_of if namespace in (None, k[0]) and k not in present]:
            self.drop(ns, name)

    def of(self, key: ClaimKey | None) -> list[Claim]:
        return list(self._by_key.get(key, {}).values()) if key is not None else []


class RuntimePods:
    def __init__(self) -> None:
        self._by_model: dict[Key, dict[str, PodView]] = {}

    def put(self, model: Key, pod: str, view: PodView | None) -> PodView | None:
        """Records a pod's view (None: it is gone); returns the previous one."""
        pods = self._by_model.setdefault(model, {})
        old = pods.pop(pod, None) if view is None else pods.get(pod)
        if view is not None:
            pods[pod] = view
        elif not pods:
            self._by_model.pop(model, None)
        return old

    def of(self, namespace: str, model: str) -> list[PodView]:
        return list(self._by_model.get((namespace, model), {}).values())

    def get(self, model: Key, pod: str) -> PodView | None:
        return self._by_model.get(model, {}).get(pod)

    def everywhere(self) -> list[tuple[Key, str]]:
        return [(model, pod) for model, pods in self._by_model.items() for pod in pods]
