"""The Secrets a SaigonModel's runtime needs and nobody else writes: the audit salt (created once)
and, with inference auth Required, the inference credentials (a token for each user of the model:
spec.auth.users and the users of its user adapters; existing lines are never rewritten).

Each model's tokens Secret has one writer, `TokenIssuer`: a reconcile asks it to issue, and it
merges every user that appeared since its last write into one compare-and-swap patch. A bulk
apply of thousands of user adapters then makes a handful of writes instead of one contended
write per adapter (a 409 storm that retried every adapter's reconcile).
"""

from __future__ import annotations

import logging
import time

from saigon_contract.kube import ApiError, KubeClient, object_path
from saigon_contract.specs import ModelSpec
from saigon_contract.workqueue import KeyedQueue

from saigon_operator import metrics
from saigon_operator.aggregator import Aggregator
from saigon_operator.builders.credentials import (
    TOKENS_KEY,
    merged_tokens,
    new_salt,
    secret_text,
    users_with_tokens,
)
from saigon_operator.builders.model import Owner, build_audit_salt_secret, build_tokens_secret, names_for
from saigon_operator.records import Key
from saigon_operator.retry import backoff

log = logging.getLogger(__name__)
USER_PREFIX = "user_"


def token_users(spec: ModelSpec) -> frozenset[str] | None:
    """The users a model names itself, or None when it issues no inference tokens."""
    return frozenset(spec.auth.users) if spec.auth.inference == "Required" else None


def model_users(aggregator: Aggregator, namespace: str, model: str, named: frozenset[str]) -> set[str]:
    """`named` (spec.auth.users) and the users of the model's user adapters."""
    users = set(named)
    for adapter in aggregator.adapters_of(namespace, model):
        name = adapter.adapter_name
        if name and name.startswith(USER_PREFIX) and not adapter.deleting:
            users.add(name.removeprefix(USER_PREFIX))
    return users


async def ensure_credentials(kube: KubeClient, aggregator: Aggregator, owner: Owner, spec: ModelSpec) -> None:
    """Creates the Secrets that are missing (the runtime mounts them); raises ApiError (classified by
    the caller). Users added later are issued by the TokenIssuer."""
    names = names_for(owner.name)
    salt_path = object_path("Secret", owner.namespace, names["audit_salt"])
    if await kube.get_or_none(salt_path) is None:
        await _create(kube, build_audit_salt_secret(owner, new_salt()))
    named = token_users(spec)
    if named is not None:
        tokens_path = object_path("Secret", owner.namespace, names["inference_tokens"])
        if await kube.get_or_none(tokens_path) is None:
            users = model_users(aggregator, owner.namespace, owner.name, named)
            await _create(kube, build_tokens_secret(owner, merged_tokens("", users)))


class TokenIssuer:
    """The one writer of each model's tokens Secret: `request(key)` after the model's users may have
    grown; requests that arrive while a write is pending or running are served by one more write."""

    def __init__(
        self,
        kube: KubeClient,
        aggregator: Aggregator,
        *,
        delay_s: float = 0.2,
        retry_base_s: float = 1.0,
        retry_cap_s: float = 60.0,
        recheck_s: float = 60.0,
    ) -> None:
        self.kube = kube
        self.aggregator = aggregator
        self.recheck_s = recheck_s
        # Users the Secret held tokens for when last read or written (monotonic time): a restarted
        # operator requests a check for each of 10,000 user adapters, and each read is the whole
        # Secret. Without a new user, it is read again only after `recheck_s`.
        self._known: dict[Key, tuple[frozenset[str], float]] = {}
        # The Secret's text and resourceVersion as this operator last wrote them: the next write
        # patches on top without reading it back (a conflict means someone else wrote: read again).
        self._written: dict[Key, tuple[str, str]] = {}
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self._queue: KeyedQueue[Key] = KeyedQueue(self._issue, delay_s=delay_s, name="inference-tokens")
        self._failures: dict[Key, int] = {}
        self.writes = 0  # tokens Secret writes (creates and patches), for tests and the scale figures

    def request(self, key: Key) -> None:
        """(namespace, model): issue tokens to any of its users who have none."""
        self._queue.mark(key)

    def forget(self, key: Key) -> None:
        self._queue.forget(key)
        self._failures.pop(key, None)
        self._known.pop(key, None)
        self._written.pop(key, None)

    async def idle(self) -> None:
        await self._queue.idle()

    async def close(self) -> None:
        await self._queue.close()

    async def _issue(self, key: Key) -> None:
        try:
            await self._sync(key)
        except ApiError as exc:
            self._written.pop(key, None)
            metrics.ERRORS.labels("InferenceTokens", exc.reason or str(exc.status)).inc()
            if exc.status == 409:  # an administrator's edit, or our create raced theirs: re-read and merge
                self._queue.mark_later(key, 0.05)
                return
            attempts = self._failures.get(key, 0)
            self._failures[key] = attempts + 1
            delay = backoff(attempts, self.retry_base_s, self.retry_cap_s)
            log.warning("issuing inference tokens for model %s/%s failed, retry in %.0fs: %s", *key, delay, exc)
            self._queue.mark_later(key, delay)
        else:
            self._failures.pop(key, None)

    async def _sync(self, key: Key) -> None:
        namespace, model = key
        record = self.aggregator.models.get(key)
        if record is None or record.token_users is None:
            return  # unseen, invalid or without inference auth: the model's reconcile requests again
        users = model_users(self.aggregator, namespace, model, record.token_users)
        known, read_at = self._known.get(key, (frozenset(), -1e9))
        if known.issuperset(users) and time.monotonic() - read_at < self.recheck_s:
            return
        owner = Owner(model, namespace, record.uid)
        path = object_path("Secret", namespace, names_for(model)["inference_tokens"])
        self._known.pop(key, None)
        read_at = time.monotonic()
        # New users: patch on top of what this operator last wrote; the periodic recheck reads it back.
        written = None if known.issuperset(users) else self._written.get(key)
        if written is None:
            existing = await self.kube.get_or_none(path)
            if existing is None:
                text = merged_tokens("", users)
                created = await self.kube.create(object_path("Secret", namespace), build_tokens_secret(owner, text))
                self.writes += 1
                self._written[key] = (text, created["metadata"]["resourceVersion"])
                self._known[key] = (frozenset(users), read_at)
                return
            written = (secret_text(existing, TOKENS_KEY) or "", existing["metadata"]["resourceVersion"])
            self._written[key] = written
        current, version = written
        merged = merged_tokens(current, users)
        if merged == current:
            self._known[key] = (frozenset(users_with_tokens(current)), read_at)
            return
        patch = build_tokens_secret(owner, merged)
        # The resourceVersion makes it a compare-and-swap: an administrator's concurrent edit wins (409, merged again).
        patch["metadata"] = {"resourceVersion": version}
        patched = await self.kube.merge_patch(path, patch)
        self.writes += 1
        self._written[key] = (merged, patched["metadata"]["resourceVersion"])
        issued = users_with_tokens(merged)
        self._known[key] = (frozenset(issued), read_at)
        added = len(issued - users_with_tokens(current))
        log.info("issued inference tokens to %d new users of model %s/%s", added, namespace, model)


async def _create(kube: KubeClient, secret: dict[str, object]) -> None:
    meta = secret["metadata"]
    assert isinstance(meta, dict)
    try:
        await kube.create(object_path("Secret", str(meta["namespace"])), secret)
    except ApiError as exc:
        if exc.status != 409:  # created meanwhile: theirs stands
            raise
