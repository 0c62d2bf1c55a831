"""The skill's routes through the node app, in process (httpx.ASGITransport)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from darkmesh_writer_tier import plugin

from sdl_core.node_app import create_node_app
from sdl_core.testing.host import TEST_NODE_KEY, TEST_PEER_KEY, make_host

RECORDS = [
    {"id": f"obs-{i}", "writer": "ana@example.com", "topic": "ai-content", "kind": "post",
     "observed_at": f"2026-10-{i + 1:02d}T08:00:00Z", "body": f"PRIVATE-BODY-{i}",
     "url": f"https://blog.example/{i}"}
    for i in range(22)
] + [{"id": "other-1", "writer": "bob@example.com", "topic": "ai-content", "kind": "post",
      "body": "PRIVATE-BODY-bob"}]


@pytest_asyncio.fixture
async def node() -> AsyncIterator[httpx.AsyncClient]:
    host = make_host(plugin, node_id="node_w")
    app = create_node_app(host)
    await host.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://localhost:8001") as client:
            ingest = await client.post("/darkmesh/ingest",
                                       json={"dataset": "writer_activity", "records": RECORDS},
                                       headers={"X-Darkmesh-Key": TEST_NODE_KEY})
            assert ingest.status_code == 200, ingest.text
            assert ingest.json() == {"dataset": "writer_activity", "count": len(RECORDS)}
            yield client
    finally:
        await host.stop()


@pytest.mark.asyncio
async def test_peer_gets_tier_counts_and_ids_but_no_body(node: httpx.AsyncClient) -> None:
    response = await node.post("/darkmesh/skills/writer-tier/ask",
                               json={"writer": "Ana@Example.com", "topic": "ai-content"},
                               headers={"X-Darkmesh-Key": TEST_PEER_KEY})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["tier"] == "expert"
    assert answer["counts"] == {"observations": 22, "posts": 22, "comments": 0, "other": 0,
                                "active_days": 22}
    assert answer["observation_ids"] == sorted(f"obs-{i}" for i in range(22))
    assert "PRIVATE-BODY" not in response.text and "blog.example" not in response.text
    assert set(answer) == {"writer", "topic", "tier", "counts", "observation_ids",
                           "observation_ids_truncated", "node_id", "computed_at"}


@pytest.mark.asyncio
async def test_peer_key_is_needed_not_the_operator_key(node: httpx.AsyncClient) -> None:
    body = {"writer": "ana@example.com", "topic": "ai-content"}
    wrong = await node.post("/darkmesh/skills/writer-tier/ask", json=body,
                            headers={"X-Darkmesh-Key": "nope"})
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "invalid node key"
    operator = await node.post("/darkmesh/skills/writer-tier/ask", json=body,
                               headers={"X-Darkmesh-Key": TEST_NODE_KEY})
    assert operator.status_code == 401


@pytest.mark.asyncio
@pytest.mark.parametrize("body", [{}, {"writer": "", "topic": "t"}, {"writer": "w"},
                                  {"writer": "w" * 400, "topic": "t"}, {"writer": 3, "topic": []}])
async def test_bad_questions_are_422(node: httpx.AsyncClient, body: dict[str, object]) -> None:
    response = await node.post("/darkmesh/skills/writer-tier/ask", json=body,
                               headers={"X-Darkmesh-Key": TEST_PEER_KEY})
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)


@pytest.mark.asyncio
async def test_non_object_and_oversized_bodies(node: httpx.AsyncClient) -> None:
    headers = {"X-Darkmesh-Key": TEST_PEER_KEY, "Content-Type": "application/json"}
    not_object = await node.post("/darkmesh/skills/writer-tier/ask", content=b"[1,2]",
                                 headers=headers)
    assert not_object.status_code == 422
    huge = await node.post("/darkmesh/skills/writer-tier/ask", content=b"{" + b" " * 9000 + b"}",
                           headers=headers)
    assert huge.status_code == 413


@pytest.mark.asyncio
async def test_operator_lookup_and_unknown_writer(node: httpx.AsyncClient) -> None:
    headers = {"X-Darkmesh-Key": TEST_NODE_KEY}
    response = await node.get("/darkmesh/skills/writer-tier/tier",
                              params={"writer": "nobody@example.com", "topic": "ai-content"},
                              headers=headers)
    assert response.status_code == 200
    assert response.json()["tier"] == "unknown" and response.json()["observation_ids"] == []
    missing = await node.get("/darkmesh/skills/writer-tier/tier", params={"writer": "x"},
                             headers=headers)
    assert missing.status_code == 400
    assert "writer and topic are required" in missing.json()["detail"]
