"""kopf registrations: decorators only; the work happens in saigon_operator.handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf
from saigon_contract import resources as r
from saigon_contract.kube import Credentials, KubeClient

from saigon_operator.aggregator import Aggregator
from saigon_operator.builders.model import Defaults
from saigon_operator.events import EventRecorder
from saigon_operator.handlers import adapter, model, pods
from saigon_operator.handlers.context import OperatorContext
from saigon_operator.settings import OperatorConfig
from saigon_operator.status import PodView, pod_view

MODELS = (r.GROUP, r.VERSION, r.MODEL_PLURAL)
ADAPTERS = (r.GROUP, r.VERSION, r.ADAPTER_PLURAL)
RUNTIME_POD_LABELS = {r.MODEL_LABEL: kopf.PRESENT}
RETRIES = 30  # with backoff up to 60 s: about half an hour, then the handler gives up


def context(memo: Any) -> OperatorContext:
    ctx: OperatorContext = memo.ctx
    return ctx


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_via_client(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **kwargs: Any) -> None:
    config: OperatorConfig = memo.config
    runtime_pods: kopf.Index[Any, PodView] = kwargs["runtime_pods"]
    settings.persistence.finalizer = r.FINALIZER
    # kopf ignores every annotation under its own prefix when diffing, so it gets a prefix of
    # its own: saigon.ai/requeue must stay visible to on.update.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=r.KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=r.KOPF_PREFIX)
    settings.posting.enabled = False  # the operator posts its own, user-facing events
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.queueing.worker_limit = config.workers
    kube = KubeClient(Credentials.load(config.kubeconfig))
    kube.write_guard = getattr(memo, "may_write", None)  # no write once the leader's deadline passed
    events = EventRecorder(kube)

    def pods_of(namespace: str, model_name: str) -> list[PodView]:
        return list(runtime_pods.get((namespace, model_name), []))

    aggregator = Aggregator(kube, events, pods_of)
    memo.ctx = OperatorContext(
        kube=kube,
        aggregator=aggregator,
        events=events,
        defaults=Defaults(
            agent_image=config.agent_image,
            agent_image_pull_policy=config.agent_image_pull_policy,
            log_format=config.log_format,
        ),
        unload_timeout_s=config.unload_timeout_s,
    )
    memo.flusher = asyncio.create_task(aggregator.run(), name="status-aggregator")


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    flusher = getattr(memo, "flusher", None)
    if flusher is not None:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
    if getattr(memo, "ctx", None) is not None:
        await context(memo).kube.close()


# --- indexes (kopf fills them before any handler runs) -------------------------------------------


@kopf.index("", "v1", "pods", labels=RUNTIME_POD_LABELS)
def runtime_pods(body: kopf.Body, **_: Any) -> dict[Any, PodView] | None:
    key = pods.index_key(body)
    return {key: pod_view(body)} if key else None


@kopf.index(*ADAPTERS)
def adapter_claims(body: kopf.Body, **_: Any) -> dict[Any, adapter.Claim] | None:
    key = adapter.claim_key(body)
    return {key: adapter.claim_of(body)} if key else None


# --- SaigonModel ---------------------------------------------------------------------------------


@kopf.on.resume(*MODELS, retries=RETRIES)
@kopf.on.create(*MODELS, retries=RETRIES)
@kopf.on.update(*MODELS, retries=RETRIES)
@kopf.timer(*MODELS, interval=300, initial_delay=300, idle=60)
async def model_changed(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    await model.reconcile(body, context(memo), kwargs.get("retry", 0))


@kopf.on.event(*MODELS)
def model_event(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    if type == "DELETED" and getattr(memo, "ctx", None) is not None:
        context(memo).aggregator.forget_model((body["metadata"]["namespace"], body["metadata"]["name"]))


# --- SaigonAdapter -------------------------------------------------------------------------------


@kopf.on.resume(*ADAPTERS, retries=RETRIES)
@kopf.on.create(*ADAPTERS, retries=RETRIES)
@kopf.on.update(*ADAPTERS, retries=RETRIES)
async def adapter_changed(body: kopf.Body, memo: Any, retry: int, **kwargs: Any) -> None:
    key = adapter.claim_key(body)
    adapter_claims: kopf.Index[Any, adapter.Claim] = kwargs["adapter_claims"]
    claims = list(adapter_claims.get(key, [])) if key else []
    await adapter.reconcile(body, claims, context(memo), retry)


@kopf.on.delete(*ADAPTERS)
async def adapter_deleted(body: kopf.Body, memo: Any, retry: int, **kwargs: Any) -> None:
    adapter_claims: kopf.Index[Any, adapter.Claim] = kwargs["adapter_claims"]
    runtime_pods: kopf.Index[Any, PodView] = kwargs["runtime_pods"]
    key = adapter.claim_key(body)
    claims = list(adapter_claims.get(key, [])) if key else []
    model_pods = list(runtime_pods.get((key[0], key[1]), [])) if key else []
    await adapter.finalize(body, claims, model_pods, context(memo), retry)


@kopf.on.event(*ADAPTERS)
def adapter_event(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    if type == "DELETED" and getattr(memo, "ctx", None) is not None:
        context(memo).aggregator.forget_adapter((body["metadata"]["namespace"], body["metadata"]["name"]))


# --- runtime pods --------------------------------------------------------------------------------


@kopf.on.event("", "v1", "pods", labels=RUNTIME_POD_LABELS)
def pod_event(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    if getattr(memo, "ctx", None) is not None:
        pods.observe(type, body, context(memo))


logging.getLogger("kopf.objects").setLevel(logging.INFO)
