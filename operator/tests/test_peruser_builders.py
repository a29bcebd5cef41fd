"""The per-user layer in operator-built pods (pure builders): inference auth on by default with a
re-read tokens file, the user store, mesh defaults and the audit destination; and the Secrets."""

from __future__ import annotations

from typing import Any

import pytest
from saigon_contract.specs import SpecError, parse_model_spec
from saigon_operator.builders.credentials import merged_tokens, secret_text, users_with_tokens
from saigon_operator.builders.model import (
    AUDIT_MOUNT,
    TOKENS_MOUNT,
    USER_DATA_MOUNT,
    Defaults,
    Owner,
    build_audit_salt_secret,
    build_pod_template,
    build_tokens_secret,
)

OWNER = Owner(name="llama", namespace="ml", uid="1234")
DEFAULTS = Defaults(agent_image="saigon/operator:1")


def pod(**spec: Any) -> dict[str, Any]:
    raw = {"baseModel": {"path": "/m"}, "image": "saigon/runtime:1", "tokenSecretRef": {"name": "tokens"}, **spec}
    template: dict[str, Any] = build_pod_template(OWNER, parse_model_spec(raw), DEFAULTS)
    return template["spec"]


def runtime(pod_spec: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod_spec["containers"] if c["name"] == "runtime")


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def volumes(pod_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_spec["volumes"]}


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in container["volumeMounts"]}


def test_by_default_inference_needs_a_token_from_a_mounted_secret_file() -> None:
    spec = pod()
    run = runtime(spec)
    assert env(run)["SAIGON_INFERENCE_TOKENS_FILE"] == f"{TOKENS_MOUNT}/tokens"
    assert volumes(spec)["inference-tokens"]["secret"]["secretName"] == "llama-inference-tokens"
    mount = mounts(run)["inference-tokens"]
    # A whole-volume mount, never subPath: the kubelet updates it in place when the Secret changes.
    assert mount["mountPath"] == TOKENS_MOUNT and mount["readOnly"] is True and "subPath" not in mount
    agent = spec["initContainers"][0]
    assert "inference-tokens" not in mounts(agent)


def test_anonymous_mode_must_be_asked_for() -> None:
    spec = pod(auth={"inference": "Disabled"})
    assert "SAIGON_INFERENCE_TOKENS_FILE" not in env(runtime(spec))
    assert "inference-tokens" not in volumes(spec)


def test_files_store_on_a_claim_and_audit_to_stdout_with_the_install_salt() -> None:
    spec = pod(userStore={"files": {"claimName": "user-data"}})
    run = runtime(spec)
    values = env(run)
    assert values["SAIGON_USER_STORE"] == "files" and values["SAIGON_MESH_DIR"] == f"{USER_DATA_MOUNT}/mesh"
    assert volumes(spec)["user-data"]["persistentVolumeClaim"] == {"claimName": "user-data"}
    assert mounts(run)["user-data"]["mountPath"] == USER_DATA_MOUNT and not mounts(run)["user-data"].get("readOnly")
    assert values["SAIGON_AUDIT_DEST"] == "stdout"
    assert values["SAIGON_AUDIT_SALT"] == {"secretKeyRef": {"name": "llama-audit-salt", "key": "salt"}}
    assert "SAIGON_LOG_PROMPTS" not in values and "SAIGON_AUDIT_RAW_USER_IDS" not in values
    # The agent's adapters volume stays the agent's: the runtime reads it only.
    assert mounts(run)["adapters"]["readOnly"] is True
    assert "user-data" not in mounts(spec["initContainers"][0])
    # Without a claim: the pod's own emptyDir (one replica).
    assert volumes(pod())["user-data"] == {"name": "user-data", "emptyDir": {}}


def test_postgres_store_gets_its_dsn_from_a_secret_and_no_files() -> None:
    spec = pod(userStore={"postgres": {"dsnSecretRef": {"name": "pg"}}}, mesh={"openaiDefault": True,
               "maxContextTokens": 128})  # fmt: skip
    values = env(runtime(spec))
    assert values["SAIGON_USER_STORE"] == "postgres"
    assert values["SAIGON_USER_STORE_DSN"] == {"secretKeyRef": {"name": "pg", "key": "dsn"}}
    assert "SAIGON_MESH_DIR" not in values and "user-data" not in volumes(spec)
    assert (values["SAIGON_MESH_DEFAULT"], values["SAIGON_MESH_MAX_TOKENS"]) == ("true", "128")


def test_audit_to_a_volume_with_prompts_and_raw_ids_opted_in() -> None:
    spec = pod(audit={"destination": "Volume", "claimName": "audit", "logPrompts": True, "rawUserIds": True})
    run = runtime(spec)
    values = env(run)
    assert values["SAIGON_LOG_DIR"] == AUDIT_MOUNT and "SAIGON_AUDIT_DEST" not in values
    assert (values["SAIGON_LOG_PROMPTS"], values["SAIGON_AUDIT_RAW_USER_IDS"]) == ("true", "true")
    assert volumes(spec)["audit-log"]["persistentVolumeClaim"] == {"claimName": "audit"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"userStore": {"files": {}, "postgres": {"dsnSecretRef": {"name": "pg"}}}}, "one of files or postgres"),
        ({"audit": {"destination": "Volume"}}, "needs audit.claimName"),
        ({"auth": {"users": ["alice\n"]}}, "not a valid user id"),
        ({"auth": {"inference": "Maybe"}}, "auth.inference"),
    ],
)
def test_invalid_per_user_settings_are_refused(spec: dict[str, Any], message: str) -> None:
    raw = {"baseModel": {"path": "/m"}, "image": "i", "tokenSecretRef": {"name": "t"}, **spec}
    with pytest.raises(SpecError) as caught:
        parse_model_spec(raw)
    assert message in caught.value.message


def test_tokens_are_only_ever_added_for_users_without_one() -> None:
    issued = iter(f"token-{i}" for i in range(10))
    text = merged_tokens("", {"bob", "alice"}, lambda: next(issued))
    assert text == "token-0=alice\ntoken-1=bob\n"
    rotated = text.replace("token-0", "rotated-by-admin")
    assert merged_tokens(rotated, {"alice", "bob"}, lambda: next(issued)) == rotated  # the admin's edit stands
    grown = merged_tokens(rotated, {"alice", "bob", "carol"}, lambda: next(issued))
    assert grown == "rotated-by-admin=alice\ntoken-1=bob\ntoken-2=carol\n"
    assert users_with_tokens("# note\nt=alice\nbroken line\n") == {"alice"}


def test_the_secrets_are_owned_by_the_model() -> None:
    tokens = build_tokens_secret(OWNER, "t=alice\n")
    salt = build_audit_salt_secret(OWNER, "ab" * 32)
    assert tokens["metadata"]["name"] == "llama-inference-tokens" and salt["metadata"]["name"] == "llama-audit-salt"
    for secret in (tokens, salt):
        assert secret["metadata"]["ownerReferences"][0]["uid"] == "1234"
    assert secret_text(tokens, "tokens") == "t=alice\n" and secret_text(salt, "salt") == "ab" * 32
