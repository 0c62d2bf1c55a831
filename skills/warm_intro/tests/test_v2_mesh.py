"""v2 through the core's in-process mesh: the real relay app (memory backend), relay
client and listeners (long-polled posts and mailboxes) over ASGI, HTTP ingest."""

from __future__ import annotations

import time
from typing import Any

import pytest
from darkmesh_warm_intro import plugin
from darkmesh_warm_intro.cluster import demo_rows

from sdl_core.testing.mesh import InProcessMesh

SKILL = "/darkmesh/skills/warm-intro"
SELF_IDS = {"node_a": "founder@startup.com", "node_b": "casey@connector.com",
            "node_c": "carol@elsewhere.com"}
BASE = {"target": {"company": "Company X", "role": "Business Development"}}


@pytest.mark.asyncio
async def test_v2_flow_through_the_real_relay_and_listeners() -> None:
    overrides = {n: {"self_identifiers": [me]} for n, me in SELF_IDS.items()}
    async with InProcessMesh(list(SELF_IDS), plugins=[plugin], node_overrides=overrides,
                             tables={"warm_intro": {"response_wait_seconds": 20.0}}) as mesh:
        for node_id in SELF_IDS:
            async with mesh.client(node_id) as http:
                for dataset in ("contacts", "interactions"):
                    r = await http.post("/darkmesh/ingest", json={
                        "dataset": dataset, "records": demo_rows(f"{node_id}_{dataset}.csv")})
                    assert r.status_code == 200, r.text

        async def registered() -> bool:
            async with mesh.relay_client() as relay:
                return len((await relay.get("/darkmesh/relay/nodes")).json()["nodes"]) == 3

        await mesh.wait_until(registered)
        async with mesh.client("node_a", timeout=30) as a, mesh.client("node_b") as b:
            started = time.perf_counter()
            answer = (await a.post(f"{SKILL}/request", json=BASE)).json()
            assert time.perf_counter() - started < 10  # all live nodes answered: not the 20 s
            assert answer["live_nodes"] == 2 and answer["answered"] == 2
            (candidate,) = answer["candidates"]
            assert candidate["score"] == 0.904
            consent = {"request_id": answer["request_id"], "consent_id": candidate["consent_id"]}
            assert (await a.post(f"{SKILL}/consent", json=consent)).json()["state"] == "pending"
            approvals: list[dict[str, Any]] = []

            async def has_approval() -> bool:
                approvals[:] = (await b.get(f"{SKILL}/approvals")).json()["approvals"]
                return bool(approvals)

            await mesh.wait_until(has_approval)
            r = await b.post(f"{SKILL}/approvals/{approvals[0]['approval_id']}/approve")
            assert r.json()["state"] == "approved"

            async def revealed() -> bool:
                result = (await a.post(f"{SKILL}/consent", json=consent)).json()
                return result["state"] == "revealed"

            await mesh.wait_until(revealed)
            result = (await a.post(f"{SKILL}/consent", json=consent)).json()
            assert result["intro"]["target_contact"]["name"] == "Taylor BD"
            assert result["intro"]["connector"]["node_id"] == "node_b"
