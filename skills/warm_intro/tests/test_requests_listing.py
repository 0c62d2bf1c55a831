"""``GET /requests``: this node's recent requests (v2 and v1), newest first, and the
dashboard's "Recent intros" panel that reads it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
from darkmesh_warm_intro.models import RequestList
from darkmesh_warm_intro.testing import LoopbackMesh, demo_mesh
from darkmesh_warm_intro.v1.testing import BASE_REQUEST, PREFIX
from darkmesh_warm_intro.v1.testing import mesh as v1_mesh
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdl_core.dashboard.sessions import COOKIE_NAME
from sdl_core.node_app import create_node_app

from .test_v2_flow import BASE_TARGET, ask, consent_and_approve
from .test_v2_routes import BASE, client

UI = "/darkmesh/ui"


@pytest_asyncio.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[LoopbackMesh]:
    async with demo_mesh(tmp_path) as mesh:
        yield mesh


@pytest.mark.asyncio
async def test_lists_v2_requests_newest_first_with_counts_only(mesh: LoopbackMesh) -> None:
    a = mesh.nodes["node_a"]
    first = await ask(a)
    second = await ask(a, {"company": "Company Z"})
    await consent_and_approve(mesh, first)
    async with client(a) as http:
        r = await http.get(f"{BASE}/requests")
        assert r.status_code == 200, r.text
        listing = RequestList.model_validate(r.json())
        rows = r.json()["requests"]
    assert [row.request_id for row in listing.requests] == [second["request_id"],
                                                            first["request_id"]]
    newest, oldest = rows
    assert newest["state"] == "complete" and newest["candidates"] == 0
    assert newest["answered"] == newest["live_nodes"] == 2
    assert newest["contact"] == {} and newest["peer"] is None
    assert oldest["template"] == "warm_intro_v2" and oldest["side"] == "requester"
    assert oldest["target"] == BASE_TARGET and oldest["candidates"] == 1
    assert oldest["revealed"] == 1 and oldest["pending"] == 0
    assert oldest["contact"] == {"name": "Taylor BD", "org": "Company X",
                                 "role": "Business Development"}
    assert oldest["peer"] == "node_b" and oldest["at"] == oldest["created_at"]
    # Nothing a listing line carries identifies a responder before a reveal, nor a secret.
    flat = repr(newest)
    for secret in ("node_b", "node_c", "reveal_token", "scalar", "@"):
        assert secret not in flat


@pytest.mark.asyncio
async def test_limit_and_state_filter(mesh: LoopbackMesh) -> None:
    a = mesh.nodes["node_a"]
    done = [await ask(a) for _ in range(3)]

    async def lost(node: Any, post: dict[str, Any]) -> None:
        """The post never reaches the responders: the request keeps collecting."""

    mesh.deliver_post = lost  # type: ignore[method-assign]
    collecting = await a.skill.v2.requester.start(*_target_and_constraints())
    async with client(a) as http:
        r = await http.get(f"{BASE}/requests", params={"limit": "2"})
        assert [x["request_id"] for x in r.json()["requests"]] == [
            collecting["request_id"], done[2]["request_id"]]
        r = await http.get(f"{BASE}/requests", params={"state": "collecting"})
        assert [x["request_id"] for x in r.json()["requests"]] == [collecting["request_id"]]
        r = await http.get(f"{BASE}/requests", params={"state": "complete", "limit": "200"})
        assert {x["request_id"] for x in r.json()["requests"]} == {d["request_id"] for d in done}
        r = await http.get(f"{BASE}/requests", headers={"X-Darkmesh-Key": "wrong"})
        assert r.status_code == 401


def _target_and_constraints() -> tuple[Any, Any]:
    from darkmesh_warm_intro.matching import Target
    from darkmesh_warm_intro.models import ConstraintsModel

    return Target.from_json(BASE_TARGET), ConstraintsModel()


@pytest.mark.asyncio
@pytest.mark.parametrize(("params", "needle"), [
    ({"limit": "0"}, "limit must be an integer from 1 to 200"),
    ({"limit": "201"}, "limit must be an integer from 1 to 200"),
    ({"limit": "-1"}, "limit must be an integer from 1 to 200"),
    ({"limit": "²"}, "limit must be an integer from 1 to 200"),
    ({"limit": "9" * 5000}, "limit must be an integer from 1 to 200"),
    ({"state": "done"}, "state must be one of: collecting, complete, expired"),
])
async def test_bad_queries_are_400_with_a_reason(mesh: LoopbackMesh, params: dict[str, str],
                                                 needle: str) -> None:
    async with client(mesh.nodes["node_a"]) as http:
        r = await http.get(f"{BASE}/requests", params=params)
    assert r.status_code == 400
    assert r.json() == {"detail": needle, "reason": "invalid_query"}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.text(max_size=12), state=st.text(max_size=12))
def test_any_query_is_200_or_400(tmp_path: Path, limit: str, state: str) -> None:
    import asyncio

    async def run() -> int:
        mesh = LoopbackMesh(tmp_path / "h")
        node = await mesh.add_node("node_h", contacts=[{"email": "x@y.z"}])
        try:
            async with client(node) as http:
                r = await http.get(f"{BASE}/requests", params={"limit": limit, "state": state})
                assert "detail" in r.json() or "requests" in r.json()
                return r.status_code
        finally:
            await mesh.close()

    assert asyncio.run(run()) in (200, 400)


@pytest.mark.asyncio
async def test_lists_v1_requests_beside_v2() -> None:
    async with v1_mesh() as m:
        a = await m.add_node("node_a", peers=["node_b"], real_skill=True)
        b = await m.add_node("node_b", peers=["node_a"], real_skill=True)
        m.poll(b, b.skill.handle_post)
        async with a.operator(m.router) as http:
            r = await http.post(f"{PREFIX}/request", json=BASE_REQUEST)
            assert r.status_code == 200, r.text
            answer = r.json()
            listing = (await http.get(f"{PREFIX}/requests")).json()["requests"]
            (row,) = listing
            assert row["template"] == "warm_intro_v1" and row["state"] == "complete"
            assert row["request_id"] == answer["request_id"] and row["candidates"] == 1
            assert row["revealed"] == 0 and row["answered"] is None
            await http.post(f"{PREFIX}/consent", json={
                "request_id": answer["request_id"],
                "consent_id": answer["candidates"][0]["consent_id"]})
            (row,) = (await http.get(f"{PREFIX}/requests")).json()["requests"]
            assert row["revealed"] == 1 and row["peer"] == "node_b"
            assert row["contact"]["name"] == "Taylor BD" and "email" not in row["contact"]
            (row,) = (await http.get(f"{PREFIX}/requests",
                                     params={"state": "complete"})).json()["requests"]
            assert (await http.get(f"{PREFIX}/requests",
                                   params={"state": "collecting"})).json() == {"requests": []}
        # A window lost to a restart is reported as expired, not as collecting forever.
        a.skill.v1.requester._remember("lost1", BASE_REQUEST["target"], "collecting", 0)
        rows = {x["request_id"]: x for x in a.skill.v1.requester.summaries()}
        assert rows["lost1"]["state"] == "expired"


async def _login(http: httpx.AsyncClient, app: Any) -> None:
    token = parse_qs(urlsplit(app.state.dashboard.login_url()).query)["token"][0]
    answer = await http.get(f"{UI}/login", params={"token": token})
    assert answer.status_code == 200
    http.cookies.set(COOKIE_NAME, answer.cookies[COOKIE_NAME], path=UI)


@pytest.mark.asyncio
async def test_dashboard_recent_intros_panel_renders_the_listing(mesh: LoopbackMesh) -> None:
    a = mesh.nodes["node_a"]
    first = await ask(a)
    await consent_and_approve(mesh, first)
    second = await ask(a, {"company": "Company Z"})
    rows = await intro_rows(a)
    # Newest first, as the route lists them (the panel does not reverse this one).
    assert [request_id for request_id, _ in rows] == [second["request_id"], first["request_id"]]
    nobody, revealed = rows[0][1], rows[1][1]
    assert "requester" in nobody and 'class="state">complete<' in nobody
    assert "node_b" not in nobody
    # A request's row tells its intro's state once there is one.
    assert "requester" in revealed and 'class="state">revealed<' in revealed
    assert "Taylor BD, Business Development (Company X)" in revealed
    assert "<code>node_b</code>" in revealed
    assert "Company X · Business Development" in revealed
    # The responder made no request: its panel shows the reveal it answered.
    ((request_id, answered),) = await intro_rows(mesh.nodes["node_b"])
    assert request_id == first["request_id"]
    assert "responder" in answered and 'class="state">revealed<' in answered
    assert "<code>node_a</code>" in answered and "Taylor BD" in answered


async def intro_rows(node: Any) -> list[tuple[str, str]]:
    """(request id, row HTML) of the dashboard's "Recent intros" table, in page order."""
    app = create_node_app(node.host)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8001",
                                 follow_redirects=False) as http:
        await _login(http, app)
        page = await http.get(UI)
    assert page.status_code == 200
    rows: list[tuple[str, str]] = re.findall(
        r'<tr class="intro" data-request-id="([0-9a-f]+)">(.*?)</tr>', page.text, re.DOTALL)
    return rows
