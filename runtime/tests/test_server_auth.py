"""Deny by default: public allowlist, bearer tokens for tenants and the admin, user id from the
credential, and no user reaching another user's adapter or mesh."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from aiohttp import web
from saigon_runtime.server.app import all_routes
from saigon_runtime.server.routing import Access
from saigon_runtime.testing.tiny import install_adapter
from server_support import ADMIN_TOKEN, LiveServer, live_server, make_config

ALICE, BOB = "alice-token", "bob-token"
GRAPH = {"nodes": [{"id": "n1", "label": "sailing", "text": "boats sail on the sea"}], "edges": []}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, adapter_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("auth")
    install_adapter(root / "adapters", "user_alice", "v1", adapter_factory(tiny_llama_dir, seed=1))
    install_adapter(root / "adapters", "user_bob", "v1", adapter_factory(tiny_llama_dir, seed=2))
    install_adapter(root / "adapters", "global", "v1", adapter_factory(tiny_llama_dir, seed=3))
    (root / "mesh").mkdir()
    config = make_config(
        tiny_llama_dir,
        adapters_dir=root / "adapters",
        mesh_dir=root / "mesh",
        inference_tokens={ALICE: "alice", BOB: "bob"},
    )
    with live_server(config) as live:
        yield live


def infer(server: LiveServer, body: dict[str, object], token: str | None) -> requests.Response:
    headers = auth(token) if token else {}
    payload = {"input_text": "the sea", "max_length": 2, "temperature": 0, **body}
    return requests.post(f"{server.url}/api/saigon/infer", json=payload, headers=headers, timeout=60)


def test_only_the_allowlisted_routes_answer_without_credentials(server: LiveServer) -> None:
    for route in all_routes():
        path = route.path.replace("{user_id}", "alice").replace("{model}", "user_alice")
        response = requests.request(route.method, f"{server.url}{path}", json={}, timeout=60)
        if route.access is Access.PUBLIC:
            assert response.status_code == 200, route.name
        else:
            assert response.status_code == 401, route.name
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert response.json()["error"]["type"] == "authentication_error"


def test_a_wrong_token_is_refused_and_tokens_do_not_cross_roles(server: LiveServer) -> None:
    assert infer(server, {}, "not-a-token").status_code == 401
    admin_list = f"{server.url}/admin/adapters"
    assert requests.get(admin_list, headers=auth(ALICE), timeout=10).status_code == 401
    assert requests.get(admin_list, headers={"Authorization": ADMIN_TOKEN}, timeout=10).status_code == 401
    assert requests.get(admin_list, headers=auth(ADMIN_TOKEN), timeout=10).status_code == 200


def test_the_user_id_comes_from_the_token(server: LiveServer) -> None:
    served = infer(server, {}, ALICE)
    assert served.status_code == 200
    assert served.json()["adapter_used"] == "user_alice"
    assert infer(server, {"user_id": "alice"}, ALICE).json()["adapter_used"] == "user_alice"
    impersonation = infer(server, {"user_id": "bob"}, ALICE)
    assert impersonation.status_code == 403
    assert impersonation.json()["error"]["param"] == "user_id"


def test_a_user_cannot_name_another_users_adapter(server: LiveServer) -> None:
    refused = infer(server, {"adapter": "user_bob"}, ALICE)
    assert refused.status_code == 403
    shared = infer(server, {"adapter": "global"}, ALICE)
    assert shared.status_code == 200 and shared.json()["adapter_used"] == "global"
    completion = requests.post(
        f"{server.url}/v1/completions",
        json={"model": "user_bob", "prompt": "x", "max_tokens": 1},
        headers=auth(ALICE),
        timeout=60,
    )
    assert completion.status_code == 403


def test_models_show_a_user_only_their_own_user_adapter(server: LiveServer) -> None:
    listed = requests.get(f"{server.url}/v1/models", headers=auth(ALICE), timeout=10).json()
    ids = {m["id"] for m in listed["data"]}
    assert "user_alice" in ids and "global" in ids and "user_bob" not in ids


def test_a_user_reads_and_writes_only_their_own_mesh(server: LiveServer) -> None:
    own = f"{server.url}/api/saigon/mesh/alice"
    assert requests.put(own, json=GRAPH, headers=auth(ALICE), timeout=10).status_code == 200
    assert requests.get(own, headers=auth(ALICE), timeout=10).json()["nodes"][0]["id"] == "n1"
    assert requests.get(own, headers=auth(BOB), timeout=10).status_code == 403
    assert requests.put(own, json=GRAPH, headers=auth(BOB), timeout=10).status_code == 403
    # The mesh of one user never reaches another's prompt.
    assert infer(server, {"input_text": "sailing boats"}, BOB).json()["mesh_context_used"] is False
    assert infer(server, {"input_text": "sailing boats"}, ALICE).json()["mesh_context_used"] is True


def test_the_admin_token_may_act_for_any_user(server: LiveServer) -> None:
    served = infer(server, {"user_id": "bob"}, ADMIN_TOKEN)
    assert served.status_code == 200 and served.json()["adapter_used"] == "user_bob"


def test_without_an_admin_token_the_admin_api_is_closed(tiny_llama_dir: Path) -> None:
    with live_server(make_config(tiny_llama_dir, admin_token=None)) as live:
        for token in (None, "", ADMIN_TOKEN):
            headers = auth(token) if token else {}
            response = requests.get(f"{live.url}/admin/adapters", headers=headers, timeout=10)
            assert response.status_code == 403
            assert response.json()["error"]["type"] == "permission_error"
        # Inference stays open: no inference tokens are configured.
        assert requests.get(f"{live.url}/v1/models", timeout=10).status_code == 200


async def unlisted(request: web.Request) -> web.Response:
    return web.json_response({"reached": True})


def test_a_route_missing_from_the_route_table_is_refused(tiny_llama_dir: Path) -> None:
    config = make_config(tiny_llama_dir)
    with live_server(config, extra_routes=[web.get("/unlisted", unlisted)]) as live:
        response = requests.get(f"{live.url}/unlisted", headers=auth(ADMIN_TOKEN), timeout=10)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
