"""SaigonAdapters, reconciled by the operator's own informer and work queue rather than by kopf.

kopf queued every watch event of an object until one of its per-object workers took them, kept
a copy of each object to diff against, and watched every adapter a second time beside the
operator's informer: at 10,000 adapters, most of the operator's memory. Here the informer's
events (saigon_operator.informers) mark a key in a bounded queue (saigon_contract.workqueue);
an adapter waits with its newest body only, trimmed to what the handlers read, and an event
that changes nothing a handler reads (the operator's own status writes) is dropped at once.

The semantics are kopf's: the finalizer is added before the first reconcile and removed after
`finalize` succeeds; every adapter is reconciled once after a (re)start; a handler's
`kopf.TemporaryError` is retried after its delay (RETRIES times), a `kopf.PermanentError`
waits for the next change; one adapter is never handled twice at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from saigon_contract import resources as r
from saigon_contract.kube import ApiError, custom_path
from saigon_contract.workqueue import KeyedQueue

from saigon_operator.handlers import adapter
from saigon_operator.handlers.context import OperatorContext, classify
from saigon_operator.indexes import claim_key
from saigon_operator.retry import RETRIES, backoff

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
Essence = tuple[Any, ...]
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"  # a copy of the spec, read by nobody here
METADATA = ("namespace", "name", "uid", "generation", "resourceVersion", "creationTimestamp", "deletionTimestamp")


def essence(body: Mapping[str, Any]) -> Essence:
    """What the handlers react to: the object's identity and generation (which every spec change
    bumps), its annotations (promotion controls), and whether it is being deleted."""
    meta = body["metadata"]
    return (meta.get("uid"), meta.get("generation"), _annotations(meta), _deleting(meta))


def _deleting(meta: Mapping[str, Any]) -> bool:
    return bool(meta.get("deletionTimestamp"))


def _held(meta: Mapping[str, Any]) -> bool:
    """Our finalizer is on it."""
    return r.FINALIZER in (meta.get("finalizers") or ())


def _annotations(meta: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    found = (meta.get("annotations") or {}).items()
    return tuple(sorted((k, str(v)) for k, v in found if k != LAST_APPLIED and not k.startswith(f"{r.KOPF_PREFIX}/")))


class Pending:
    """An adapter's newest body while it waits for its handler: metadata and spec as dicts, the
    status as compact JSON (only a first reconcile after a restart reads it)."""

    __slots__ = ("essence", "object", "status_json")

    def __init__(self, body: Mapping[str, Any], essence: Essence) -> None:
        meta = body["metadata"]
        trimmed = {k: meta[k] for k in METADATA if k in meta}
        trimmed["annotations"] = dict(_annotations(meta))
        trimmed["finalizers"] = list(meta.get("finalizers") or ())
        self.object: dict[str, Any] = {"metadata": trimmed, "spec": body.get("spec") or {}}
        self.status_json = json.dumps(body.get("status") or {}, separators=(",", ":"))
        self.essence = essence

    def body(self) -> dict[str, Any]:
        return {**self.object, "status": json.loads(self.status_json)}

    @property
    def deleting(self) -> bool:
        return _deleting(self.object["metadata"])

    @property
    def held(self) -> bool:
        return _held(self.object["metadata"])


class AdapterController:
    def __init__(self, ctx: OperatorContext, workers: int) -> None:
        self.ctx = ctx
        self.queue: KeyedQueue[Key] = KeyedQueue(self._work, name="saigon-adapter", limit=workers)
        self._pending: dict[Key, Pending] = {}
        self._handled: dict[Key, Essence] = {}  # the essence a handler last finished with
        self._attempts: dict[Key, tuple[Essence, int]] = {}  # failed attempts at an essence, retry scheduled
        self._fetch: set[Key] = set()  # requeued without a body at hand: read it from the API
        self._started = asyncio.Event()  # set once every informer has listed: no handler sees half an index

    def start(self) -> None:
        self._started.set()

    def observe(self, kind: str, body: Mapping[str, Any]) -> None:
        """Every watch event of a SaigonAdapter ("SYNC" for a listed one)."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if kind == "DELETED":
            self.forget(key)
            return
        deleting, held = _deleting(meta), _held(meta)
        if deleting and not held:
            self.forget(key)  # nothing of ours to release: another controller's finalizer holds it
            self.ctx.progress.finished(key, meta.get("generation"))
            return
        current = essence(body)
        if self._handled.get(key) == current and (held or deleting):
            return  # most events: our own status writes; no trimmed copy is made for them
        pending = Pending(body, current)
        self._pending[key] = pending
        attempt = self._attempts.get(key)
        if attempt is not None and attempt[0] == pending.essence:
            return  # its retry is scheduled; it will take this newer body
        self._attempts.pop(key, None)
        self.queue.mark(key)

    def requeue(self, key: Key) -> None:
        """Reconciles an adapter again although it did not change (a sibling went away, or its
        model's policy changed)."""
        self._handled.pop(key, None)
        self._attempts.pop(key, None)
        if key not in self._pending:
            self._fetch.add(key)
        self.queue.mark(key)

    def forget(self, key: Key) -> None:
        self.queue.forget(key)
        self._pending.pop(key, None)
        self._handled.pop(key, None)
        self._attempts.pop(key, None)
        self._fetch.discard(key)

    def retain(self, namespace: str | None, present: set[Key]) -> None:
        """After a relist: forgets the adapters (of `namespace`, or all) that no longer exist."""
        for key in [k for k in {*self._handled, *self._pending} if namespace in (None, k[0]) and k not in present]:
            self.forget(key)

    async def close(self) -> None:
        await self.queue.close()

    async def _work(self, key: Key) -> None:
        await self._started.wait()
        pending = self._pending.get(key)
        if pending is None and key in self._fetch:
            pending = await self._read(key)
        self._fetch.discard(key)
        if pending is None:
            return
        if self._handled.get(key) == pending.essence and (pending.held or pending.deleting):
            self._done_with(key, pending)  # an event of a write of ours: nothing new
            return
        attempt = self._attempts.get(key)
        retry = attempt[1] if attempt is not None and attempt[0] == pending.essence else 0
        body = pending.body()
        try:
            if pending.deleting:
                claim = claim_key(body)
                model_pods = self.ctx.pods.of(claim[0], claim[1]) if claim else []
                await adapter.finalize(body, self.ctx.claims.of(claim), model_pods, self.ctx, retry)
                finalizers = [f for f in pending.object["metadata"]["finalizers"] if f != r.FINALIZER]
                await self._set_finalizers(body, finalizers, retry)
            else:
                if not pending.held:
                    await self._set_finalizers(body, [*pending.object["metadata"]["finalizers"], r.FINALIZER], retry)
                await adapter.reconcile(body, self.ctx.claims.of(claim_key(body)), self.ctx, retry)
        except kopf.TemporaryError as exc:
            self._retry(key, pending, retry, exc.delay if exc.delay is not None else backoff(retry), str(exc))
            return
        except kopf.PermanentError as exc:
            log.error("SaigonAdapter %s/%s failed (until it changes): %s", *key, exc)
        except Exception as exc:  # a bug in one adapter's handling must not stop the others
            log.exception("SaigonAdapter %s/%s: unexpected error", *key)
            self._retry(key, pending, retry, backoff(retry), repr(exc))
            return
        finally:
            self.ctx.progress.finished(key, pending.object["metadata"].get("generation"))
        self._done_with(key, pending)

    def _done_with(self, key: Key, pending: Pending) -> None:
        self._handled[key] = pending.essence
        self._attempts.pop(key, None)
        if self._pending.get(key) is pending:  # not if a newer body came meanwhile: that one runs next
            del self._pending[key]

    def _retry(self, key: Key, pending: Pending, retry: int, delay: float, why: str) -> None:
        # A deletion keeps trying: finalize itself lets go once pods had unload_timeout_s to unload.
        if retry + 1 > RETRIES and not pending.deleting:
            log.error("SaigonAdapter %s/%s: gave up after %d attempts (until it changes): %s", *key, retry + 1, why)
            self._done_with(key, pending)
            return
        log.warning("SaigonAdapter %s/%s: retrying in %.1f s: %s", *key, delay, why)
        self._attempts[key] = (pending.essence, retry + 1)
        self.queue.mark_later(key, delay)

    async def _set_finalizers(self, body: Mapping[str, Any], finalizers: list[str], retry: int) -> None:
        """Writes the finalizer list as of the body's resourceVersion: a conflict (someone else's
        finalizer changed meanwhile) is retried with the newer body."""
        meta = body["metadata"]
        path = custom_path(r.GROUP, r.VERSION, r.ADAPTER_PLURAL, meta["namespace"], meta["name"])
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta.get("resourceVersion")}}
        try:
            await self.ctx.kube.merge_patch(path, patch)
        except ApiError as exc:
            if exc.status == 404:
                raise kopf.PermanentError("the SaigonAdapter is gone") from None
            raise classify(exc, "writing the finalizer", retry) from None

    async def _read(self, key: Key) -> Pending | None:
        path = custom_path(r.GROUP, r.VERSION, r.ADAPTER_PLURAL, *key)
        try:
            body = await self.ctx.kube.get_or_none(path)
        except ApiError as exc:
            log.warning("SaigonAdapter %s/%s: could not read it to reconcile again: %s", *key, exc)
            self.queue.mark_later(key, backoff(0))
            self._fetch.add(key)
            return None
        if body is None:
            return None
        pending = Pending(body, essence(body))
        self._pending[key] = pending
        return pending
