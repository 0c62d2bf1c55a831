"""The skill's HTTP routes through the node app (ASGI in-process), v2 and dispatch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from darkmesh_warm_intro.testing import LoopbackMesh, MeshNode, add_demo_node, demo_mesh

from sdl_core.node_app import create_node_app
from sdl_core.testing.host import TEST_NODE_KEY

from .test_v2_flow import BASE_TARGET, TAYLOR

BASE = "/darkmesh/skills/warm-intro"
KEY = {"X-Darkmesh-Key": TEST_NODE_KEY}


def client(node: MeshNode) -> httpx.AsyncClient:
    app = create_node_app(node.host)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node",
                             headers=KEY)


@pytest_asyncio.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[LoopbackMesh]:
    async with demo_mesh(tmp_path) as mesh:
        yield mesh


@pytest.mark.asyncio
async def test_full_flow_over_http(mesh: LoopbackMesh) -> None:
    async with client(mesh.nodes["node_a"]) as a, client(mesh.nodes["node_b"]) as b:
        r = await a.post(f"{BASE}/request", json={"target": BASE_TARGET})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["template"] == "warm_intro_v2" and answer["state"] == "complete"
        assert answer["live_nodes"] == 2 and answer["answered"] == 2
        (candidate,) = answer["candidates"]
        assert candidate["score"] == 0.904
        consent = {"request_id": answer["request_id"], "consent_id": candidate["consent_id"]}
        r = await a.post(f"{BASE}/consent", json=consent)
        assert r.status_code == 200 and r.json()["state"] == "pending"
        assert r.json()["approved"] is False and r.json()["intro"] is None
        await mesh.drain()
        approvals = (await b.get(f"{BASE}/approvals")).json()["approvals"]
        (approval,) = [x for x in approvals if x["template"] == "warm_intro_v2"]
        assert approval["contact"]["name"] == "Taylor BD"
        r = await b.post(f"{BASE}/approvals/{approval['approval_id']}/approve")
        assert r.json() == {"approval_id": approval["approval_id"], "state": "approved",
                            "approved": True}
        await mesh.drain()
        r = await a.post(f"{BASE}/consent", json=consent)
        assert r.json()["approved"] is True and r.json()["intro"]["target_contact"] == TAYLOR
        status = (await a.get(f"{BASE}/requests/{answer['request_id']}")).json()
        assert status["candidates"][0]["state"] == "revealed"
        assert status["intros"][candidate["consent_id"]]["relationship_strength"] == 0.88
        reveals_a = (await a.get(f"{BASE}/reveals")).json()["reveals"]
        reveals_b = (await b.get(f"{BASE}/reveals")).json()["reveals"]
        assert [x["side"] for x in reveals_a if x.get("template") == "warm_intro_v2"] == \
            ["requester"]
        assert [x["side"] for x in reveals_b if x.get("template") == "warm_intro_v2"] == \
            ["responder"]
        r = await b.post(f"{BASE}/approvals/{approval['approval_id']}/decline")
        assert r.status_code == 409 and r.json()["reason"] == "already_decided"


@pytest.mark.asyncio
async def test_async_start_then_status(mesh: LoopbackMesh) -> None:
    async with client(mesh.nodes["node_a"]) as a:
        r = await a.post(f"{BASE}/v2/requests", json={"target": BASE_TARGET})
        assert r.status_code == 202
        request_id = r.json()["request_id"]
        await mesh.drain()
        status = (await a.get(f"{BASE}/requests/{request_id}")).json()
        assert status["state"] == "complete" and status["answered"] == 2
        assert [c["score"] for c in status["candidates"]] == [0.904]


@pytest.mark.asyncio
@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"target": BASE_TARGET, "constraints": {"max_candidates": 11}}, 422, "max_candidates"),
    ({"target": BASE_TARGET, "constraints": {"max_candidates": 0}}, 422, "max_candidates"),
    ({"target": BASE_TARGET, "constraints": {"min_strength": 1.5}}, 422, "min_strength"),
    ({"target": BASE_TARGET, "constraints": {"min_strength": "x"}}, 422, "min_strength"),
    ({"constraints": {}}, 422, "target"),
    ({"target": {}}, 400, "company or a role"),
    ({"target": {"company": None, "role": ""}}, 400, "company or a role"),
    ({"target": BASE_TARGET, "template": "warm_intro_v9"}, 400, "Template not allowed"),
    ([], 422, "JSON object"),
])
async def test_bad_requests_are_4xx_and_publish_nothing(
    mesh: LoopbackMesh, body: Any, status: int, needle: str
) -> None:
    async with client(mesh.nodes["node_a"]) as a:
        r = await a.post(f"{BASE}/request", json=body)
        assert r.status_code == status and needle in r.text
    assert mesh._seq == 0


@pytest.mark.asyncio
async def test_hostile_bodies_and_unknown_ids(mesh: LoopbackMesh) -> None:
    async with client(mesh.nodes["node_a"]) as a:
        r = await a.post(f"{BASE}/request", content=b"{not json")
        assert r.status_code == 422
        r = await a.post(f"{BASE}/consent", json={"request_id": "x"})
        assert r.status_code == 422
        r = await a.post(f"{BASE}/consent", json={"request_id": "nope", "consent_id": "c"})
        assert r.status_code == 404 and r.json()["detail"] == "request_id not found or expired"
        r = await a.get(f"{BASE}/requests/nope")
        assert r.status_code == 404
        r = await a.post(f"{BASE}/approvals/nope/approve")
        assert r.status_code == 404
        r = await a.post(f"{BASE}/keys/node_q/accept")
        assert r.status_code == 404 and r.json()["reason"] == "no_key_change"
        answer = (await a.post(f"{BASE}/request", json={"target": BASE_TARGET})).json()
        r = await a.post(f"{BASE}/consent", json={"request_id": answer["request_id"],
                                                  "consent_id": "bogus"})
        assert r.status_code == 404 and r.json()["detail"] == "consent_id not found"


@pytest.mark.asyncio
async def test_operator_key_required(mesh: LoopbackMesh) -> None:
    async with client(mesh.nodes["node_a"]) as a:
        for method, path in (("POST", "/request"), ("POST", "/consent"), ("GET", "/approvals"),
                             ("GET", "/requests/x"), ("GET", "/reveals"), ("GET", "/keys")):
            r = await a.request(method, BASE + path, headers={"X-Darkmesh-Key": "wrong"})
            assert r.status_code == 401, path


@pytest.mark.asyncio
async def test_keys_route_shows_fingerprint_and_pins(mesh: LoopbackMesh) -> None:
    async with client(mesh.nodes["node_a"]) as a:
        await a.post(f"{BASE}/request", json={"target": BASE_TARGET})
        keys = (await a.get(f"{BASE}/keys")).json()
        assert keys["fingerprint"] == mesh.nodes["node_a"].skill.v2.core.keys.fingerprint
        assert sorted(p["node_id"] for p in keys["pinned"]) == ["node_b", "node_c"]
    status = mesh.nodes["node_a"].skill.status()
    assert status["v2"]["key_fingerprint"] == keys["fingerprint"]


@pytest.mark.asyncio
async def test_v1_disabled_serves_v2_only(tmp_path: Path) -> None:
    mesh = LoopbackMesh(tmp_path)
    a = await add_demo_node(mesh, "a", v1_enabled=False)
    assert a.skill.v1 is None
    paths = {r.path for r in a.skill.routes()}
    assert "/reveal" not in paths and "/psi/respond" not in paths and "/request" in paths
    async with client(a) as http:
        r = await http.post(f"{BASE}/request",
                            json={"target": BASE_TARGET, "template": "warm_intro_v1"})
        assert r.status_code == 400 and r.json()["detail"] == "Template not allowed: warm_intro_v1"
        r = await http.post(f"{BASE}/reveal", json={})
        assert r.status_code in (404, 405)
    await mesh.close()


@pytest.mark.asyncio
async def test_a_v1_default_template_with_v1_disabled_is_refused_not_a_500(
        tmp_path: Path) -> None:
    mesh = LoopbackMesh(tmp_path)
    a = await add_demo_node(mesh, "a", v1_enabled=False, default_template="warm_intro_v1")
    async with client(a) as http:
        r = await http.post(f"{BASE}/request", json={"target": BASE_TARGET})
        assert r.status_code == 400 and r.json()["detail"] == "Template not allowed: warm_intro_v1"
    await mesh.close()


@pytest.mark.asyncio
async def test_v1_template_dispatches_to_v1(mesh: LoopbackMesh) -> None:
    a = mesh.nodes["node_a"]
    calls: list[dict[str, Any]] = []

    async def fake_request(body: dict[str, Any], identity: Any) -> dict[str, Any]:
        calls.append(body)
        return {"request_id": "v1req", "candidates": [], "privacy_cost": 0.1}

    assert a.skill.v1 is not None
    a.skill.v1.request = fake_request
    async with client(a) as http:
        r = await http.post(f"{BASE}/request",
                            json={"target": BASE_TARGET, "template": "warm_intro_v1"})
        assert r.json() == {"request_id": "v1req", "candidates": [], "privacy_cost": 0.1}
    assert calls and calls[0]["template"] == "warm_intro_v1"
