"""The Secrets a SaigonModel's runtime needs and nobody else writes: the audit salt (created once)
and, with inference auth Required, the inference credentials (a token for each user of the model:
spec.auth.users and the users of its user adapters; existing lines are never rewritten)."""

from __future__ import annotations

import logging

from saigon_contract import resources as r
from saigon_contract.kube import ApiError, custom_path, object_path
from saigon_contract.specs import ModelSpec, SpecError, parse_model_spec

from saigon_operator.builders.credentials import (
    TOKENS_KEY,
    merged_tokens,
    new_salt,
    secret_text,
)
from saigon_operator.builders.model import Owner, build_audit_salt_secret, build_tokens_secret, names_for
from saigon_operator.handlers.context import OperatorContext

log = logging.getLogger(__name__)
USER_PREFIX = "user_"


def model_users(ctx: OperatorContext, owner: Owner, spec: ModelSpec) -> set[str]:
    users = set(spec.auth.users)
    for adapter in ctx.aggregator.adapters_of(owner.namespace, owner.name):
        name = adapter.adapter_name
        if name and name.startswith(USER_PREFIX) and not adapter.deleting:
            users.add(name.removeprefix(USER_PREFIX))
    return users


async def ensure_credentials(ctx: OperatorContext, owner: Owner, spec: ModelSpec) -> None:
    """Create what is missing; raises ApiError (classified by the caller)."""
    names = names_for(owner.name)
    salt_path = object_path("Secret", owner.namespace, names["audit_salt"])
    if await ctx.kube.get_or_none(salt_path) is None:
        await _create(ctx, build_audit_salt_secret(owner, new_salt()))
    if spec.auth.inference == "Required":
        await _sync_tokens(ctx, owner, model_users(ctx, owner, spec))


async def sync_tokens_for(ctx: OperatorContext, namespace: str, model: str) -> None:
    """After the model's adapters changed: issue tokens to new users (the model's spec is re-read)."""
    body = await ctx.kube.get_or_none(custom_path(r.GROUP, r.VERSION, r.MODEL_PLURAL, namespace, model))
    if body is None:
        return
    try:
        spec = parse_model_spec(body.get("spec") or {})
    except SpecError:
        return  # the model handler reports it; nothing to issue for an invalid model
    owner = Owner(model, namespace, body["metadata"]["uid"])
    if spec.auth.inference == "Required":
        await _sync_tokens(ctx, owner, model_users(ctx, owner, spec))


async def _sync_tokens(ctx: OperatorContext, owner: Owner, users: set[str]) -> None:
    path = object_path("Secret", owner.namespace, names_for(owner.name)["inference_tokens"])
    existing = await ctx.kube.get_or_none(path)
    if existing is None:
        await _create(ctx, build_tokens_secret(owner, merged_tokens("", users)))
        return
    current = secret_text(existing, TOKENS_KEY) or ""
    merged = merged_tokens(current, users)
    if merged == current:
        return
    patch = build_tokens_secret(owner, merged)
    # The resourceVersion makes it a compare-and-swap: an administrator's concurrent edit wins (409, retried).
    patch["metadata"] = {"resourceVersion": existing["metadata"]["resourceVersion"]}
    await ctx.kube.merge_patch(path, patch)
    log.info("issued inference tokens to new users of model %s/%s", owner.namespace, owner.name)


async def _create(ctx: OperatorContext, secret: dict[str, object]) -> None:
    meta = secret["metadata"]
    assert isinstance(meta, dict)
    try:
        await ctx.kube.create(object_path("Secret", str(meta["namespace"])), secret)
    except ApiError as exc:
        if exc.status != 409:  # created meanwhile (another reconcile): theirs stands
            raise
