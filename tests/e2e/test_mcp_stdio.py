"""``darkmesh mcp`` as a real subprocess over stdio, driven by the MCP SDK's client,
against real nodes (``darkmesh node serve``) with the warm-intro skill and the demo data:
list the tools, request an intro, read its status, consent."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from darkmesh_warm_intro.cluster import CLI, LocalCluster
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.e2e

SELF_IDS = {"node_a": "founder@startup.com", "node_b": "casey@connector.com"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as cluster:
        yield cluster.start_demo(SELF_IDS, warm_intro={"response_wait_seconds": 5.0})


def _server(cluster: LocalCluster, *extra: str) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DARKMESH_", "NEOTOMA_"))}
    env["DARKMESH_LOAD_PLUGINS"] = ",".join(cluster.plugins)
    return StdioServerParameters(
        command=CLI[0], args=[*CLI[1:], "--config", str(cluster.nodes["node_a"].config),
                              "mcp", *extra],
        env=env, cwd=str(cluster.root),
    )


def _payload(result: Any) -> Any:
    assert not result.is_error, result.content
    return result.structured_content


@pytest.mark.asyncio
async def test_agent_requests_an_intro_and_reads_its_status(cluster: LocalCluster) -> None:
    assert sys.executable == CLI[0]
    async with Client(_server(cluster)) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert {"request_intro", "intro_status", "list_candidates", "consent",
                "list_pending_approvals", "node_status"} <= tools
        assert "approve_reveal" not in tools  # the operator did not enable it

        status = _payload(await client.call_tool("node_status", {}))
        assert status["health"]["node_id"] == "node_a"
        assert status["integrations"]["ready"] is True

        answer = _payload(await client.call_tool("request_intro", {
            "company": "Company X", "role": "Business Development"}))
        assert [c["score"] for c in answer["candidates"]] == [0.904]
        request_id = answer["request_id"]

        read = _payload(await client.call_tool("intro_status", {"request_id": request_id}))
        assert read["request_id"] == request_id and read["state"] == "complete"
        assert read["candidates"][0]["state"] == "available"
        listed = _payload(await client.call_tool("list_candidates",
                                                 {"request_id": request_id}))
        consent_id = listed["candidates"][0]["consent_id"]

        pending = _payload(await client.call_tool("consent", {
            "request_id": request_id, "consent_id": consent_id}))
        assert pending["state"] == "pending" and pending["intro"] is None

        unknown = await client.call_tool("intro_status", {"request_id": "0000"})
        assert unknown.is_error and "HTTP 404" in unknown.content[0].text


@pytest.mark.asyncio
async def test_approve_tools_only_when_enabled(cluster: LocalCluster) -> None:
    async with Client(_server(cluster, "--allow-approve")) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert {"approve_reveal", "decline_reveal"} <= tools
        missing = await client.call_tool("approve_reveal", {"approval_id": "nope"})
        assert missing.is_error and "HTTP 404" in missing.content[0].text
