"""SaigonModel: validate, apply the children (server-side apply), record facts for status."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from saigon_contract import resources as r
from saigon_contract.kube import ApiError, object_path
from saigon_contract.specs import SpecError, parse_model_spec

from saigon_operator import metrics
from saigon_operator.builders.model import Owner, build_children, build_role, selector_string
from saigon_operator.builders.network import build_network_policy, network_policy_name
from saigon_operator.builders.router import build_router, router_kinds, router_names
from saigon_operator.handlers.context import OperatorContext, classify
from saigon_operator.handlers.credentials import ensure_credentials, token_users
from saigon_operator.records import ModelRecord


async def reconcile(body: Mapping[str, Any], ctx: OperatorContext, retry: int) -> None:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    existing = ctx.aggregator.models.get((namespace, name))
    record = ModelRecord(
        namespace=namespace,
        name=name,
        uid=meta["uid"],
        generation=meta.get("generation"),
        selector=selector_string(name),
        written=existing.written if existing else dict(body.get("status") or {}),
    )
    with metrics.reconciling("SaigonModel") as result:
        try:
            spec = parse_model_spec(body.get("spec") or {})
        except SpecError as exc:
            # Not retried: nothing changes until the spec does (which re-triggers this handler).
            record.invalid = exc
            ctx.aggregator.put_model(record)
            await ctx.aggregator.write_model((namespace, name))
            result["outcome"] = "invalid"
            return
        owner = Owner(name, namespace, meta["uid"])
        record.source_policy = spec.adapter_sources
        record.token_users = token_users(spec)
        allowed = record.source_policy.allowed_secrets
        children = build_children(owner, spec, ctx.defaults, secret_names=agent_secrets(ctx, namespace, name, allowed))
        deployment = children[-1]
        record.desired_replicas = spec.replicas
        record.spec_hash = deployment["spec"]["template"]["metadata"]["annotations"][r.SPEC_HASH_ANNOTATION]
        what = ""
        try:
            what = "creating the model's credentials"
            await ensure_credentials(ctx.kube, ctx.aggregator, owner, spec)
            for child in children:
                what = f"applying {child['kind']} {child['metadata']['name']}"
                await apply(ctx, child)
            if spec.network_policy.enabled:
                what = "applying the NetworkPolicy"
                await apply(ctx, build_network_policy(owner, spec))
            else:
                what = "deleting the NetworkPolicy"
                await ctx.kube.delete(object_path("NetworkPolicy", namespace, network_policy_name(name)))
            if ctx.placements.observe(dict(body)):  # this spec, whether or not the informer saw it yet
                placement_changed(ctx, (namespace, name))
            if spec.router.enabled:
                for child in build_router(owner, spec, ctx.routing.servers((namespace, name))):
                    what = f"applying {child['kind']} {child['metadata']['name']}"
                    await apply(ctx, child)
                    if child["kind"] == "ConfigMap":
                        ctx.routing.applied((namespace, name), child)
            else:
                for kind, key in router_kinds():
                    what = f"deleting {kind} {router_names(name)[key]}"
                    await ctx.kube.delete(object_path(kind, namespace, router_names(name)[key]))
        except ApiError as exc:
            error = classify(exc, what, retry)
            record.apply_error = str(error)
            ctx.aggregator.put_model(record)
            await ctx.aggregator.write_model((namespace, name))
            result["outcome"] = "temporary_error" if exc.transient else "permanent_error"
            raise error from None
        previous_policy = existing.source_policy if existing else None
        ctx.aggregator.put_model(record)
        ctx.tokens.request((namespace, name))
        await ctx.aggregator.write_model((namespace, name))
        if previous_policy != record.source_policy:
            # Adapters refused (or allowed) by the old allow-lists are judged again.
            for adapter in ctx.aggregator.adapters_of(namespace, name):
                if (adapter.invalid is not None and adapter.invalid.reason == "SourceNotAllowed") or (
                    any(t.source.s3 is not None or t.source.credential_secret for t in adapter.targets())
                ):
                    ctx.requeue_adapter((namespace, adapter.name))


def placement_changed(ctx: OperatorContext, key: tuple[str, str]) -> None:
    """A model's placement settings changed: its adapters' placements and its router follow."""
    for adapter in ctx.aggregator.adapters_of(*key):
        ctx.aggregator.mark_adapter((adapter.namespace, adapter.name))
    ctx.routing.mark(key)


async def apply(ctx: OperatorContext, manifest: dict[str, Any]) -> None:
    meta = manifest["metadata"]
    path = object_path(manifest["kind"], meta["namespace"], meta["name"])
    await ctx.kube.apply(path, manifest, field_manager=r.FIELD_MANAGER)


def agent_secrets(ctx: OperatorContext, namespace: str, model: str, allowed: Collection[str]) -> tuple[str, ...]:
    """Credential Secrets the agents of this model may read: those its adapters' sources name (S3 keys,
    Hugging Face tokens), if the model allows them."""
    names = {
        secret
        for a in ctx.aggregator.adapters_of(namespace, model)
        if not a.deleting
        for t in a.targets()
        if (secret := t.source.credential_secret) is not None
    }
    return tuple(sorted(names.intersection(allowed)))


async def sync_agent_role(ctx: OperatorContext, namespace: str, model: str) -> None:
    """Re-applies the agent Role when the set of credential Secrets changes (no pod roll needed)."""
    record = ctx.aggregator.models.get((namespace, model))
    if record is None or record.invalid is not None or record.source_policy is None:
        return
    allowed = record.source_policy.allowed_secrets
    role = build_role(Owner(model, namespace, record.uid), secret_names=agent_secrets(ctx, namespace, model, allowed))
    await apply(ctx, role)
