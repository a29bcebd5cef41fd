"""kopf registrations: decorators only; the work happens in saigon_operator.handlers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from saigon_contract import resources as r
from saigon_contract.kube import Credentials, KubeClient

from saigon_operator import connections, informers
from saigon_operator.adapter_controller import AdapterController
from saigon_operator.aggregator import Aggregator
from saigon_operator.builders.model import Defaults
from saigon_operator.diffbase import MemoryDiffBaseStorage
from saigon_operator.events import EventRecorder
from saigon_operator.handlers import model
from saigon_operator.handlers.context import OperatorContext
from saigon_operator.handlers.credentials import TokenIssuer
from saigon_operator.indexes import AdapterClaims, RuntimePods
from saigon_operator.placement import Placements, RouterSync
from saigon_operator.progress import Progress
from saigon_operator.retry import RETRIES
from saigon_operator.settings import OperatorConfig

MODELS = (r.GROUP, r.VERSION, r.MODEL_PLURAL)


def context(memo: Any) -> OperatorContext:
    ctx: OperatorContext = memo.ctx
    return ctx


@kopf.on.login()
async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
    info = kopf.login_via_client(**kwargs)
    return connections.bounded_session(info) if info is not None else None


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **kwargs: Any) -> None:
    config: OperatorConfig = memo.config
    settings.persistence.finalizer = r.FINALIZER
    # kopf ignores every annotation under its own prefix when diffing, so it gets a prefix of
    # its own: the saigon.ai/ annotations stay visible to on.update.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=r.KOPF_PREFIX)
    memo.diffbase = MemoryDiffBaseStorage(prefix=r.KOPF_PREFIX)
    settings.persistence.diffbase_storage = memo.diffbase
    settings.posting.enabled = False  # the operator posts its own, user-facing events
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    kube = KubeClient(Credentials.load(config.kubeconfig))
    kube.write_guard = getattr(memo, "may_write", None)  # no write once the leader's deadline passed
    events = EventRecorder(kube)
    runtime_pods = RuntimePods()
    placements = Placements()
    aggregator = Aggregator(kube, events, runtime_pods.of, placed=placements.placed)
    ctx = OperatorContext(
        kube=kube,
        aggregator=aggregator,
        events=events,
        defaults=Defaults(
            agent_image=config.agent_image,
            agent_image_pull_policy=config.agent_image_pull_policy,
            log_format=config.log_format,
        ),
        pods=runtime_pods,
        claims=AdapterClaims(),
        progress=getattr(memo, "progress", None) or Progress(config.stall_timeout_s),
        tokens=TokenIssuer(kube, aggregator),
        unload_timeout_s=config.unload_timeout_s,
        placements=placements,
        routing=RouterSync(kube, placements, runtime_pods.of, aggregator.adapters_of),
    )
    memo.adapters = AdapterController(ctx, config.workers)
    ctx.requeue_adapter = memo.adapters.requeue
    memo.flusher = asyncio.create_task(aggregator.run(), name="status-aggregator")
    memo.informers = await informers.start(kube, config.namespaces, ctx, memo.adapters)
    memo.adapters.start()
    memo.ctx = ctx


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    tasks = [*getattr(memo, "informers", ()), *([memo.flusher] if getattr(memo, "flusher", None) else [])]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if getattr(memo, "adapters", None) is not None:
        await memo.adapters.close()
    if getattr(memo, "ctx", None) is not None:
        await context(memo).tokens.close()
        await context(memo).routing.close()
        await context(memo).kube.close()


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
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        context(memo).aggregator.forget_model(key)
        context(memo).tokens.forget(key)
    if type == "DELETED":
        memo.diffbase.forget(body["metadata"]["uid"])


# --- SaigonAdapter ---------------------------------------------------------------------------------
# No kopf handlers: saigon_operator.adapter_controller reconciles them from the operator's informer.


logging.getLogger("kopf.objects").setLevel(logging.INFO)
