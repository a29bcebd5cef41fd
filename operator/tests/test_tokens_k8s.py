"""The inference-tokens writer against a real API server: one write serves a burst of new users,
an administrator's edits stand, and a concurrent edit (409) is merged again, not lost."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from controlplane.cluster import Cluster
from saigon_contract.kube import Credentials, KubeClient, object_path
from saigon_operator.aggregator import Aggregator
from saigon_operator.builders.credentials import users_with_tokens
from saigon_operator.events import EventRecorder
from saigon_operator.handlers.credentials import TokenIssuer
from saigon_operator.records import AdapterRecord, ModelRecord

MODEL = "llama"
SECRET = f"{MODEL}-inference-tokens"


class CountingClient(KubeClient):
    """A real client that counts its writes to Secrets and can run an edit of its own just before one."""

    def __init__(self, credentials: Credentials) -> None:
        super().__init__(credentials, timeout_s=10)
        self.secret_writes = 0
        self.secret_reads = 0
        self.before_next_patch: Any = None

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        if "/secrets/" in path:
            self.secret_reads += 1
        return await super().get_or_none(path)

    async def create(self, path: str, body: object) -> dict[str, Any]:
        if "/secrets" in path:
            self.secret_writes += 1
        return await super().create(path, body)

    async def merge_patch(self, path: str, body: object) -> dict[str, Any]:
        if "/secrets/" in path:
            self.secret_writes += 1
            edit, self.before_next_patch = self.before_next_patch, None
            if edit is not None:
                await edit()
        return await super().merge_patch(path, body)


def add_user_adapters(aggregator: Aggregator, namespace: str, users: range) -> None:
    for i in users:
        aggregator.put_adapter(
            AdapterRecord(namespace, f"a{i}", f"uid-{i}", MODEL, generation=1, adapter_name=f"user_{i:04d}")
        )


def tokens_text(kube: KubeClient, namespace: str) -> Any:
    async def read() -> str:
        secret = await kube.get(object_path("Secret", namespace, SECRET))
        return base64.b64decode(secret["data"]["tokens"]).decode()

    return read()


def issuing(cluster: Cluster, delay_s: float) -> tuple[CountingClient, Aggregator, TokenIssuer]:
    """A counting client, an aggregator over it and the tokens writer under test."""
    client = CountingClient(Credentials.load(str(cluster.kubeconfig)))
    aggregator = Aggregator(client, EventRecorder(client), lambda namespace, model: [])
    return client, aggregator, TokenIssuer(client, aggregator, delay_s=delay_s)


def test_a_burst_of_new_users_is_issued_in_one_write_and_an_admins_concurrent_edit_stands(
    k8s_cluster: Cluster, k8s_namespace: str
) -> None:
    ns = k8s_namespace
    uid = k8s_cluster.kubectl("get", "namespace", ns, "-o", "jsonpath={.metadata.uid}")

    async def scenario() -> None:
        client, aggregator, issuer = issuing(k8s_cluster, delay_s=0.2)
        admin = KubeClient(Credentials.load(str(k8s_cluster.kubeconfig)))
        try:
            aggregator.put_model(ModelRecord(ns, MODEL, uid, token_users=frozenset({"alice"})))
            # 300 reconciles of new user adapters, as a bulk apply makes them.
            add_user_adapters(aggregator, ns, range(300))
            for _ in range(300):
                issuer.request((ns, MODEL))
            await issuer.idle()
            text = await tokens_text(client, ns)
            assert users_with_tokens(text) == {"alice"} | {f"{i:04d}" for i in range(300)}
            assert client.secret_writes == 1, client.secret_writes

            # An administrator rotates alice's token; new users later must not undo it.
            rotated = "\n".join(
                "rotated-by-admin=alice" if line.endswith("=alice") else line for line in text.splitlines()
            )
            path = object_path("Secret", ns, SECRET)
            await admin.merge_patch(path, {"stringData": {"tokens": rotated + "\n"}})
            # ... and edits it again between the issuer's read and its write: the API server refuses
            # the issuer's stale patch (409), and the issuer merges onto the edit.
            revoked = rotated.replace("rotated-by-admin=alice", "rotated-twice=alice")

            async def concurrent_edit() -> None:
                await admin.merge_patch(path, {"stringData": {"tokens": revoked + "\n"}})

            client.before_next_patch = concurrent_edit
            add_user_adapters(aggregator, ns, range(300, 310))
            issuer.request((ns, MODEL))
            await issuer.idle()
            await asyncio.sleep(0.2)  # the 409's re-read is scheduled a moment later
            await issuer.idle()
            final = await tokens_text(client, ns)
            assert "rotated-twice=alice" in final.splitlines()
            assert users_with_tokens(final) == {"alice"} | {f"{i:04d}" for i in range(310)}
            old_lines = [line for line in revoked.splitlines() if line]
            assert final.splitlines()[: len(old_lines)] == old_lines  # existing lines are never rewritten
            assert client.secret_writes == 3  # the create, the refused stale patch, the merged one
        finally:
            await issuer.close()
            await client.close()
            await admin.close()

    asyncio.run(scenario())


def test_new_users_are_patched_on_top_of_the_last_write_without_reading_the_secret_back(
    k8s_cluster: Cluster, k8s_namespace: str
) -> None:
    ns = k8s_namespace
    uid = k8s_cluster.kubectl("get", "namespace", ns, "-o", "jsonpath={.metadata.uid}")

    async def scenario() -> None:
        client, aggregator, issuer = issuing(k8s_cluster, delay_s=0.0)
        try:
            aggregator.put_model(ModelRecord(ns, MODEL, uid, token_users=frozenset({"alice"})))
            for burst in (range(0, 5), range(5, 9), range(9, 12)):
                add_user_adapters(aggregator, ns, burst)
                issuer.request((ns, MODEL))
                await issuer.idle()
            # One read (it did not exist: created), then a patch per burst on top of the last write.
            assert (client.secret_reads, client.secret_writes) == (1, 3)
            first = await tokens_text(client, ns)
            assert users_with_tokens(first) == {"alice"} | {f"{i:04d}" for i in range(12)}
            # Deleted behind the operator's back: the stale patch fails, and the next try reads and creates.
            await client.delete(object_path("Secret", ns, SECRET))
            add_user_adapters(aggregator, ns, range(12, 13))
            issuer.request((ns, MODEL))
            await issuer.idle()
            path = object_path("Secret", ns, SECRET)
            for _ in range(100):  # the retry after the 404 comes a second later (backoff)
                if await client.get_or_none(path) is not None:
                    break
                await asyncio.sleep(0.1)
            await issuer.idle()
            assert users_with_tokens(await tokens_text(client, ns)) == {"alice"} | {f"{i:04d}" for i in range(13)}
        finally:
            await issuer.close()
            await client.close()

    asyncio.run(scenario())


def test_no_tokens_for_a_model_without_inference_auth(k8s_cluster: Cluster, k8s_namespace: str) -> None:
    ns = k8s_namespace

    async def scenario() -> None:
        client, aggregator, issuer = issuing(k8s_cluster, delay_s=0.0)
        try:
            aggregator.put_model(ModelRecord(ns, MODEL, "uid", token_users=None))
            add_user_adapters(aggregator, ns, range(3))
            issuer.request((ns, MODEL))
            await issuer.idle()
            assert client.secret_writes == 0
            assert await client.get_or_none(object_path("Secret", ns, SECRET)) is None
        finally:
            await issuer.close()
            await client.close()

    asyncio.run(scenario())
