"""``darkmesh mcp --http`` as a real subprocess: the MCP SDK's streamable HTTP client,
with and without the bearer token, against real nodes with the demo data."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import httpx
import httpx2
import pytest
from darkmesh_warm_intro.cluster import CLI, LocalCluster, free_port
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from sdl_core.mcp_server import MCP_PATH
from sdl_core.testing.polling import until

pytestmark = pytest.mark.e2e

SELF_IDS = {"node_a": "founder@startup.com", "node_b": "casey@connector.com"}
TOKEN = "mcp-http-test-token-0123456789"


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    with LocalCluster() as cluster:
        cluster.start_demo(SELF_IDS, warm_intro={"response_wait_seconds": 5.0})
        port = free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DARKMESH_", "NEOTOMA_"))}
        env["DARKMESH_LOAD_PLUGINS"] = ",".join(cluster.plugins)
        env["DARKMESH_MCP_TOKEN"] = TOKEN
        log = (cluster.root / "mcp.log").open("ab")
        process = subprocess.Popen(
            [*CLI, "--config", str(cluster.nodes["node_a"].config), "mcp", "--http",
             "--port", str(port)],
            cwd=cluster.root, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}{MCP_PATH}"

        def listening() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"darkmesh mcp --http exited with {process.returncode}")
            try:
                httpx.post(url, timeout=1)
            except httpx.HTTPError:
                return False
            return True

        try:
            until(listening, "darkmesh mcp --http listening", timeout=30)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            log.close()


def test_requests_without_the_bearer_token_are_refused(mcp_url: str) -> None:
    bare = httpx.post(mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                      timeout=5)
    assert bare.status_code == 401
    wrong = httpx.post(mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                       headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 401


@pytest.mark.asyncio
async def test_agent_requests_an_intro_over_streamable_http(mcp_url: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http, \
            Client(streamable_http_client(mcp_url, http_client=http)) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert {"request_intro", "intro_status", "consent", "node_status"} <= tools
        assert "approve_reveal" not in tools
        answer = await client.call_tool("request_intro", {"company": "Company X",
                                                          "role": "Business Development"})
        assert not answer.is_error, answer.content
        assert [c["score"] for c in answer.structured_content["candidates"]] == [0.904]
        status = await client.call_tool("intro_status",
                                        {"request_id": answer.structured_content["request_id"]})
        assert not status.is_error and status.structured_content["state"] == "complete"
