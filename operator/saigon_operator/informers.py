"""The operator's own list+watch loops over runtime pods, SaigonAdapters and SaigonModels.

They keep saigon_operator.indexes, the placements and the progress watchdog current, and feed
SaigonAdapters to saigon_operator.adapter_controller; startup waits for each loop's first listing
once, and the controller starts only then, so handlers never see half an index.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence
from typing import Any

from saigon_contract import resources as r
from saigon_contract.kube import KINDS, KubeClient, list_and_watch

from saigon_operator.adapter_controller import AdapterController
from saigon_operator.handlers import pods
from saigon_operator.handlers.context import OperatorContext
from saigon_operator.handlers.model import placement_changed

Key = tuple[str, str]  # (namespace, name)


def collection(prefix: str, plural: str, namespace: str | None) -> str:
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"


async def start(
    kube: KubeClient, namespaces: Sequence[str], ctx: OperatorContext, adapters: AdapterController
) -> list[asyncio.Task[None]]:
    """Starts a model, a pod and an adapter loop per namespace (or one each, cluster-wide) and
    returns once every loop has listed. Models come first: an adapter's placement needs its model's.
    The adapter loop feeds `adapters` as well: it reconciles every SaigonAdapter."""
    listed: list[asyncio.Event] = []
    tasks: list[asyncio.Task[None]] = []
    for namespace in namespaces or (None,):
        for name, make in (
            ("models", _models),
            ("pods", _pods),
            ("adapters", functools.partial(_adapters, adapters=adapters)),
        ):
            done = asyncio.Event()
            listed.append(done)
            tasks.append(asyncio.create_task(make(kube, namespace, ctx, done), name=f"informer-{name}"))
    listing: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*(e.wait() for e in listed)))
    await asyncio.wait([listing, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if not listing.done():  # a loop ended before its first listing: a bug, not an API fault
        listing.cancel()
        for task in tasks:
            task.cancel()
        failed = next(t for t in tasks if t.done())
        raise RuntimeError(f"{failed.get_name()} stopped before its first listing") from failed.exception()
    return tasks


async def _pods(kube: KubeClient, namespace: str | None, ctx: OperatorContext, listed: asyncio.Event) -> None:
    prefix, plural = KINDS["Pod"]

    async def relisted(keys: list[Key]) -> None:
        present = set(keys)
        for model, pod in ctx.pods.everywhere():
            if namespace in (None, model[0]) and (model[0], pod) not in present:
                pods.observe("DELETED", _stub(model, pod), ctx)
        listed.set()

    params = {"labelSelector": r.MODEL_LABEL}
    path = collection(prefix, plural, namespace)
    async for kind, body in list_and_watch(kube, path, params=params, on_relist=relisted, keep=_key):
        pods.observe(kind, body, ctx)


async def _models(kube: KubeClient, namespace: str | None, ctx: OperatorContext, listed: asyncio.Event) -> None:
    async def relisted(keys: list[Key]) -> None:
        present = set(keys)
        for key in ctx.placements.keys(namespace):
            if key not in present:
                ctx.placements.forget(key)
                ctx.routing.forget(key)
        listed.set()

    path = collection(f"/apis/{r.GROUP}/{r.VERSION}", r.MODEL_PLURAL, namespace)
    async for kind, body in list_and_watch(kube, path, on_relist=relisted, keep=_key):
        if kind == "DELETED":
            ctx.placements.forget(_key(body))
            ctx.routing.forget(_key(body))
        elif ctx.placements.observe(body):
            placement_changed(ctx, _key(body))


async def _adapters(
    kube: KubeClient, namespace: str | None, ctx: OperatorContext, listed: asyncio.Event, adapters: AdapterController
) -> None:
    async def relisted(keys: list[Key]) -> None:
        present = set(keys)  # each listed object went through the loop below first
        ctx.claims.retain(namespace, present)
        ctx.progress.retain(namespace, present)
        adapters.retain(namespace, present)
        for key in [k for k in ctx.aggregator.adapters if namespace in (None, k[0]) and k not in present]:
            ctx.aggregator.forget_adapter(key)  # deleted while the watch was down
        listed.set()

    path = collection(f"/apis/{r.GROUP}/{r.VERSION}", r.ADAPTER_PLURAL, namespace)
    async for kind, body in list_and_watch(kube, path, on_relist=relisted, keep=_key):
        key = _key(body)
        if kind == "DELETED":
            ctx.claims.drop(*key)
            ctx.progress.forget(key)
            ctx.aggregator.forget_adapter(key)
        else:
            ctx.claims.put(body)
            ctx.progress.noticed(key, body["metadata"].get("generation"))
        adapters.observe(kind, body)


def _key(body: Mapping[str, Any]) -> Key:
    return body["metadata"]["namespace"], body["metadata"]["name"]


def _stub(model: tuple[str, str], pod: str) -> dict[str, Any]:
    """The least of a Pod body that pods.observe needs to drop a pod."""
    return {"metadata": {"namespace": model[0], "name": pod, "labels": {r.MODEL_LABEL: model[1]}}}
