"""The operator's own indexes (runtime pods per model, claims on adapter names)."""

from __future__ import annotations

from typing import Any

from saigon_contract.reports import PodReport
from saigon_operator.handlers.adapter import winner
from saigon_operator.indexes import AdapterClaims, RuntimePods, claim_key
from saigon_operator.status import PodView


def adapter(name: str, user: str, *, ns: str = "ns", model: str = "llama", created: str = "2026-01-01T00:00:00Z",
            deleting: bool = False) -> dict[str, Any]:  # fmt: skip
    meta: dict[str, Any] = {"name": name, "namespace": ns, "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-02T00:00:00Z"
    return {"metadata": meta, "spec": {"modelRef": {"name": model}, "scope": {"user": user}}}


def test_claims_follow_an_object_whose_scope_changes() -> None:
    claims = AdapterClaims()
    claims.put(adapter("a", "bob"))
    claims.put(adapter("b", "bob", created="2026-01-01T00:00:01Z"))
    assert winner(claims.of(("ns", "llama", "user_bob"))).name == "a"  # type: ignore[union-attr]
    claims.put(adapter("a", "carol"))
    assert [c.name for c in claims.of(("ns", "llama", "user_bob"))] == ["b"]
    assert [c.name for c in claims.of(("ns", "llama", "user_carol"))] == ["a"]
    claims.drop("ns", "a")
    assert claims.of(("ns", "llama", "user_carol")) == []


def test_a_relist_drops_the_claims_of_objects_gone_from_its_namespace_only() -> None:
    claims = AdapterClaims()
    claims.put(adapter("a", "bob"))
    claims.put(adapter("gone", "eve"))
    claims.put(adapter("x", "bob", ns="other"))
    claims.put(adapter("a", "bob", deleting=True))  # as listed again
    claims.retain("ns", {("ns", "a")})
    assert claims.of(("ns", "llama", "user_eve")) == []
    assert [c.deleting for c in claims.of(("ns", "llama", "user_bob"))] == [True]
    assert [c.name for c in claims.of(("other", "llama", "user_bob"))] == ["x"]


def test_an_object_without_a_valid_name_claims_nothing() -> None:
    body = adapter("a", "not a valid id!")
    assert claim_key(body) is None
    claims = AdapterClaims()
    claims.put(body)
    assert claims.of(claim_key(body)) == []


def view(name: str, ready: bool = True) -> PodView:
    return PodView(name=name, phase="Running", ready=ready, deleting=False, spec_hash=None, report=PodReport())


def test_runtime_pods_per_model_report_the_previous_view() -> None:
    pods = RuntimePods()
    assert pods.put(("ns", "llama"), "p1", view("p1", ready=False)) is None
    assert pods.put(("ns", "llama"), "p1", view("p1")) == view("p1", ready=False)
    pods.put(("ns", "llama"), "p2", view("p2"))
    pods.put(("ns", "mistral"), "p3", view("p3"))
    assert sorted(p.name for p in pods.of("ns", "llama")) == ["p1", "p2"]
    assert pods.put(("ns", "llama"), "p1", None) == view("p1")
    assert [p.name for p in pods.of("ns", "llama")] == ["p2"]
    assert sorted(pods.everywhere()) == [(("ns", "llama"), "p2"), (("ns", "mistral"), "p3")]
