"""The MCP server in-process: the SDK's client against ``build_server``, whose tools call
a node app (core routes plus a stand-in warm-intro skill) through ``ASGITransport``.

The real ``darkmesh mcp`` subprocess over stdio against a real node is
``tests/e2e/test_mcp_stdio.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from mcp import Client
from mcp.types import TextContent
from starlette.requests import Request
from starlette.responses import JSONResponse

from sdl_core import HTTPProblem, RouteSpec, SkillSpec, hookimpl
from sdl_core.mcp_server import BearerGate, NodeClient, build_server
from sdl_core.operator import OperatorCredential, operator_credential
from sdl_core.testing.host import TEST_NODE_KEY, make_host, running_node_app

BASE = "http://localhost:8001"


class IntroSkill:
    """The warm-intro routes the MCP tools call, recording what they received."""

    def __init__(self, host: Any, settings: Any) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    async def _record(self, request: Request) -> Any:
        raw = await request.body()
        body = json.loads(raw) if raw else None
        self.calls.append((request.method, request.url.path, body))
        return body

    async def request(self, request: Request) -> JSONResponse:
        body = await self._record(request)
        if not body["target"].get("company") and not body["target"].get("role"):
            raise HTTPProblem(400, "target needs a company or a role", reason="empty_target")
        return JSONResponse({"request_id": "rq1", "candidates": [], "privacy_cost": 0.0,
                             "state": "collecting"}, status_code=202)

    async def status(self, request: Request) -> JSONResponse:
        await self._record(request)
        if request.path_params["request_id"] != "rq1":
            raise HTTPProblem(404, "unknown request_id", reason="unknown_request")
        return JSONResponse({"request_id": "rq1", "state": "complete", "candidates": [
            {"pseudonym_id": "p1", "score": 0.9, "consent_id": "c1", "state": "available"}],
            "intros": {}})

    async def consent(self, request: Request) -> JSONResponse:
        body = await self._record(request)
        return JSONResponse({**body, "approved": False, "state": "pending", "intro": None,
                             "pseudonym_id": "p1"})

    async def approvals(self, request: Request) -> JSONResponse:
        await self._record(request)
        return JSONResponse({"approvals": [{"approval_id": "ap1"}]})

    async def decide(self, request: Request) -> JSONResponse:
        await self._record(request)
        return JSONResponse({"approval_id": request.path_params["approval_id"],
                             "state": "approved", "approved": True})

    def routes(self) -> list[RouteSpec]:
        return [
            RouteSpec(path="/request", endpoint=self.request, methods=("POST",),
                      capability="node.query"),
            RouteSpec(path="/v2/requests", endpoint=self.request, methods=("POST",),
                      capability="node.query"),
            RouteSpec(path="/requests/{request_id}", endpoint=self.status,
                      capability="node.query"),
            RouteSpec(path="/consent", endpoint=self.consent, methods=("POST",),
                      capability="node.consent"),
            RouteSpec(path="/approvals", endpoint=self.approvals, capability="node.approve"),
            RouteSpec(path="/approvals/{approval_id}/approve", endpoint=self.decide,
                      methods=("POST",), capability="node.approve"),
        ]

    async def handle_post(self, post: dict[str, Any]) -> None:
        """Serves no relay template."""

    async def start(self) -> None:
        """Nothing to start."""

    async def stop(self) -> None:
        """Nothing to stop."""


class IntroPlugin:
    __name__ = "mcp-test-intro"

    @hookimpl
    def darkmesh_register_skills(self) -> list[SkillSpec]:
        return [SkillSpec(name="warm-intro", factory=IntroSkill)]


@pytest_asyncio.fixture
async def node() -> AsyncIterator[tuple[Any, Any]]:
    host = make_host(IntroPlugin(), node_id="node_a")
    async with running_node_app(host) as app:
        yield host, app


def _node_client(app: Any, key: str = TEST_NODE_KEY) -> NodeClient:
    return NodeClient(base_url=BASE, credential=OperatorCredential(
        headers={"X-Darkmesh-Key": key}), transport=httpx.ASGITransport(app=app))


def _text(result: Any) -> str:
    """The text of a tool result's first content block (tool errors are text)."""
    first = result.content[0]
    assert isinstance(first, TextContent), first
    return first.text


def _payload(result: Any) -> Any:
    assert not result.is_error, result.content
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


@pytest.mark.asyncio
async def test_tools_listed_and_approve_only_when_allowed(node: tuple[Any, Any]) -> None:
    _, app = node
    async with Client(build_server(_node_client(app), allow_approve=False)) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
    assert names == {"node_status", "request_intro", "intro_status", "list_candidates",
                     "consent", "list_pending_approvals"}
    async with Client(build_server(_node_client(app), allow_approve=True)) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"approve_reveal", "decline_reveal"} <= names
        decided = _payload(await client.call_tool("approve_reveal", {"approval_id": "ap1"}))
    assert decided["state"] == "approved"


@pytest.mark.asyncio
async def test_request_status_candidates_consent_go_through_the_routes(
    node: tuple[Any, Any],
) -> None:
    host, app = node
    skill = host.skills["warm-intro"]
    async with Client(build_server(_node_client(app), allow_approve=False)) as client:
        started = _payload(await client.call_tool(
            "request_intro", {"company": "Company X", "role": "BD", "wait": False}))
        assert started["request_id"] == "rq1"
        status = _payload(await client.call_tool("intro_status", {"request_id": "rq1"}))
        assert status["state"] == "complete"
        listed = _payload(await client.call_tool("list_candidates", {"request_id": "rq1"}))
        assert [c["consent_id"] for c in listed["candidates"]] == ["c1"]
        consent = _payload(await client.call_tool(
            "consent", {"request_id": "rq1", "consent_id": "c1"}))
        assert consent["state"] == "pending"
        pending = _payload(await client.call_tool("list_pending_approvals", {}))
        assert pending["approvals"] == [{"approval_id": "ap1"}]
        status_node = _payload(await client.call_tool("node_status", {}))
        assert status_node["health"]["node_id"] == "node_a"
        assert "required_integrations" in status_node["integrations"]
    paths = [(method, path) for method, path, _ in skill.calls]
    assert paths[0] == ("POST", "/darkmesh/skills/warm-intro/v2/requests")
    assert skill.calls[0][2]["target"] == {"company": "Company X", "role": "BD"}
    assert ("POST", "/darkmesh/skills/warm-intro/consent") in paths


@pytest.mark.asyncio
async def test_errors_are_tool_errors_naming_the_cause(node: tuple[Any, Any]) -> None:
    _, app = node
    async with Client(build_server(_node_client(app), allow_approve=False)) as client:
        missing = await client.call_tool("intro_status", {"request_id": "rq9"})
        assert missing.is_error and "HTTP 404" in _text(missing)
        hostile = await client.call_tool("intro_status", {"request_id": "../approvals"})
        assert hostile.is_error and "request_id must be" in _text(hostile)
        empty = await client.call_tool("request_intro", {})
        assert empty.is_error and "company or a role" in _text(empty)
    async with Client(build_server(_node_client(app, key="wrong"), allow_approve=False)) as c:
        refused = await c.call_tool("node_status", {})
        assert refused.is_error and "HTTP 401" in _text(refused)
    unreachable = NodeClient(base_url="http://127.0.0.1:9", credential=OperatorCredential())
    async with Client(build_server(unreachable, allow_approve=False)) as client:
        down = await client.call_tool("list_pending_approvals", {})
        assert down.is_error and "not reachable" in _text(down)


def test_operator_credential_order() -> None:
    key = operator_credential(base_url=BASE, auth_mode="either", node_key="k", signer=None)
    assert key.headers == {"X-Darkmesh-Key": "k"}
    with pytest.raises(Exception, match="no operator credential"):
        operator_credential(base_url=BASE, auth_mode="aauth", node_key="k", signer=None)
    with pytest.raises(Exception, match="DARKMESH_NODE_KEY"):
        operator_credential(base_url=BASE, auth_mode="hmac", node_key="", signer=None)


@pytest.mark.asyncio
async def test_http_transport_needs_the_bearer_token() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route

    async def inner(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    gate = BearerGate(Starlette(routes=[Route("/mcp", inner, methods=["POST"])]), "t0ken")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gate),
                                 base_url="http://127.0.0.1") as client:
        assert (await client.post("/mcp")).status_code == 401
        wrong = await client.post("/mcp", headers={"Authorization": "Bearer other"})
        assert wrong.status_code == 401 and wrong.json()["detail"].startswith("MCP bearer")
        good = await client.post("/mcp", headers={"Authorization": "Bearer t0ken"})
        assert good.status_code == 200
