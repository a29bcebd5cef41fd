"""SaigonAdapter: validate, resolve name conflicts, publish the target; the finalizer waits for unload."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from saigon_contract import resources as r
from saigon_contract.kube import ApiError, custom_path
from saigon_contract.specs import AdapterSource, SpecError, Target, parse_adapter_spec, parse_model_spec, target_or_none

from saigon_operator import metrics
from saigon_operator.handlers.context import OperatorContext, classify
from saigon_operator.handlers.credentials import USER_PREFIX
from saigon_operator.handlers.model import sync_agent_role
from saigon_operator.indexes import Claim
from saigon_operator.promotion import PromotionState
from saigon_operator.records import AdapterRecord, compact
from saigon_operator.status import PodView

log = logging.getLogger(__name__)


def winner(claims: Iterable[Claim]) -> Claim | None:
    """The oldest live claim owns the name; the agents break ties the same way."""
    live = sorted((c for c in claims if not c.deleting), key=lambda c: (c.created, c.name))
    return live[0] if live else None


async def reconcile(body: Mapping[str, Any], claims: Iterable[Claim], ctx: OperatorContext, retry: int) -> None:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    spec_raw = body.get("spec") or {}
    status = body.get("status") or {}
    existing = ctx.aggregator.adapters.get((namespace, name))
    record = AdapterRecord(
        namespace=namespace,
        name=name,
        uid=meta["uid"],
        model=str((spec_raw.get("modelRef") or {}).get("name", "")),
        generation=meta.get("generation"),
        written_json=existing.written_json if existing else compact(status),
    )
    previous = existing.target if existing else target_or_none(status.get("target"))
    record.target = previous
    record.promotion = existing.promotion if existing else PromotionState.from_status(status)
    record.annotations = {k: str(v) for k, v in (meta.get("annotations") or {}).items()}
    with metrics.reconciling("SaigonAdapter") as result:
        try:
            spec = parse_adapter_spec(spec_raw)
            if spec.source.s3 is not None or spec.source.credential_secret is not None:
                await _check_source_allowed(ctx, namespace, record.model, spec.source, retry)
        except SpecError as exc:
            # Pods keep serving the last good target; nothing is retried until the spec changes.
            record.invalid = exc
            record.adapter_name = status.get("adapterName") if isinstance(status.get("adapterName"), str) else None
            result["outcome"] = "invalid"
            await _write(ctx, record, retry)
            return
        record.adapter_name = spec.adapter_name
        owner = winner(claims)
        if owner is not None and owner.name != name:
            record.conflict_with = owner.name
            record.target = record.promotion = None
            result["outcome"] = "conflict"
        else:
            # The aggregator's planner promotes it (and posts the promotion's events).
            record.desired = Target(version=spec.version, sha256=spec.sha256, source=spec.source)
            record.policy = spec.promotion
        await _write(ctx, record, retry)
        if spec.adapter_name.startswith(USER_PREFIX):
            ctx.tokens.request((namespace, record.model))
        if _uses_credentials(spec.source) or (previous is not None and _uses_credentials(previous.source)):
            try:
                await sync_agent_role(ctx, namespace, record.model)
            except ApiError as exc:
                raise classify(exc, "updating the agent role", retry) from None


async def _write(ctx: OperatorContext, record: AdapterRecord, retry: int) -> None:
    ctx.aggregator.put_adapter(record)
    try:
        await ctx.aggregator.write_adapter((record.namespace, record.name))
    except ApiError as exc:
        raise classify(exc, "writing status", retry) from None


async def finalize(
    body: Mapping[str, Any], claims: Iterable[Claim], pods: Iterable[PodView], ctx: OperatorContext, retry: int
) -> None:
    """Holds the deletion until no running pod of the model reports the adapter any more."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    key = (namespace, name)
    record = ctx.aggregator.adapters.get(key)
    if record is None:
        spec_raw = body.get("spec") or {}
        record = AdapterRecord(
            namespace=namespace,
            name=name,
            uid=meta["uid"],
            model=str((spec_raw.get("modelRef") or {}).get("name", "")),
            generation=meta.get("generation"),
            adapter_name=(body.get("status") or {}).get("adapterName"),
            written_json=compact(body.get("status") or {}),
        )
    record.deleting = True
    await _write(ctx, record, retry)
    others = [c for c in claims if c.name != name and not c.deleting]
    # With another live claim on the name, that object takes the name over: nothing to unload.
    if record.adapter_name and not others:
        serving = sorted(p.name for p in pods if p.active and record.adapter_name in p.report.adapters)
        if serving:
            waited = _seconds_since(meta.get("deletionTimestamp"))
            if waited < ctx.unload_timeout_s:
                raise kopf.TemporaryError(
                    f"waiting for {len(serving)} pods to unload: {', '.join(serving[:5])}", delay=1
                )
            await ctx.events.post(
                record.ref(),
                "Warning",
                "UnloadTimedOut",
                f"pods {', '.join(serving[:5])} did not unload in {ctx.unload_timeout_s:g}s",
            )
    ctx.aggregator.forget_adapter(key)
    next_owner = winner(others)
    if next_owner is not None:
        ctx.requeue_adapter((namespace, next_owner.name))
    if record.target is not None and _uses_credentials(record.target.source):
        try:
            await sync_agent_role(ctx, namespace, record.model)
        except ApiError as exc:
            log.warning("could not shrink the agent role of model %s/%s: %s", namespace, record.model, exc)


def _uses_credentials(source: AdapterSource) -> bool:
    return source.s3 is not None or source.credential_secret is not None


async def _check_source_allowed(
    ctx: OperatorContext, namespace: str, model: str, source: AdapterSource, retry: int
) -> None:
    """The SaigonModel, not the adapter's author, decides which credentials and endpoints its agents use:
    the operator would otherwise hand the agents any Secret of the namespace an author names."""
    try:
        body = await ctx.kube.get_or_none(custom_path(r.GROUP, r.VERSION, r.MODEL_PLURAL, namespace, model))
    except ApiError as exc:
        raise classify(exc, f"reading SaigonModel {model}", retry) from None
    if body is None:
        raise SpecError("SourceNotAllowed", f"SaigonModel {model} does not exist to allow this source's credentials")
    try:
        policy = parse_model_spec(body.get("spec") or {}).adapter_sources
    except SpecError:
        raise SpecError("SourceNotAllowed", f"SaigonModel {model} is invalid; it allows no credentials") from None
    why = policy.refusal(source)
    if why is not None:
        raise SpecError("SourceNotAllowed", why)


def _seconds_since(stamp: object) -> float:
    if not isinstance(stamp, str):
        return 0.0
    try:
        when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return (datetime.now(UTC) - when).total_seconds()
