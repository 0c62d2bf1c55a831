"""Warm intro v2 on a mesh where the relay and every node run in ``aauth`` mode with no
shared key anywhere: the real relay app, listeners and skill, the real AAuth verifier on
every hop (issue 4, "End to end", in-process; ``tests/e2e/test_aauth_mesh_e2e.py`` runs
the same with processes and the CLI)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from aauth_kit import (
    BASE_REQUEST,
    SKILL,
    TAYLOR,
    Mode,
    accepted,
    approve_and_reveal,
    build_mesh,
    ingest_demo,
    plan_mesh,
    signed_node_client,
    signed_relay_client,
)

from sdl_core.testing.mesh import InProcessMesh

ALL_AAUTH: dict[str, Mode] = {"node_a": "aauth", "node_b": "aauth", "node_c": "aauth"}


async def registered(mesh: InProcessMesh, count: int) -> bool:
    host = mesh.relay
    assert host is not None
    return len(await host.backend.list_nodes()) >= count


@pytest.mark.asyncio
async def test_v2_intro_with_aauth_everywhere_and_no_shared_key(tmp_path: Path) -> None:
    plan = plan_mesh(tmp_path, ALL_AAUTH)
    async with build_mesh(plan, response_wait_seconds=20.0) as mesh:
        # Nothing in any settings object holds a shared key.
        assert mesh.relay is not None
        assert mesh.relay.settings.key.get_secret_value() == ""
        for host in mesh.nodes.values():
            s = host.settings
            assert (s.node_key.get_secret_value(), s.peer_key.get_secret_value(),
                    s.relay_key.get_secret_value()) == ("", "", "")
            assert host.signing_enabled("node") and host.relay is not None
            assert host.relay.signing()
        for node_id in ALL_AAUTH:
            await ingest_demo(mesh, plan, node_id)
        await mesh.wait_until(lambda: registered(mesh, 3), timeout=10)

        a_operator = plan.keys["node_a"].operator
        b_operator = plan.keys["node_b"].operator
        async with signed_node_client(mesh, "node_a", a_operator, timeout=30) as a, \
                signed_node_client(mesh, "node_b", b_operator) as b:
            started = time.perf_counter()
            response = await a.post(f"{SKILL}/request", json=BASE_REQUEST)
            assert response.status_code == 200, response.text
            answer = response.json()
            # Both other nodes answered through their signed mailboxes, before the deadline.
            assert (answer["live_nodes"], answer["answered"]) == (2, 2)
            assert time.perf_counter() - started < 10  # not the 20 s window
            (candidate,) = answer["candidates"]
            assert candidate["score"] == 0.904
            consent = {"request_id": answer["request_id"], "consent_id": candidate["consent_id"]}
            pending = (await a.post(f"{SKILL}/consent", json=consent)).json()
            assert pending["state"] == "pending" and pending["intro"] is None

            approval, result = await approve_and_reveal(mesh, a, b, consent)
            # The relay stamped the sender from the signature: the responder sees node_a.
            assert approval["requester_node_id"] == "node_a"
            assert result["intro"]["target_contact"] == TAYLOR
            assert result["intro"]["connector"]["node_id"] == "node_b"
            status = (await a.get(f"{SKILL}/requests/{answer['request_id']}")).json()
            assert status["candidates"][0]["score"] == 0.904

        # Every accepted request on the relay and the nodes was signed.
        assert accepted(mesh.relay.metrics, "aauth") > 0
        assert accepted(mesh.relay.metrics, "shared-key") == 0
        for host in mesh.nodes.values():
            assert accepted(host.metrics, "shared-key") == 0

        # And a shared key, had anyone one, opens nothing.
        async with mesh.client("node_a", key="anything") as keyed:
            refused = await keyed.get("/darkmesh/capabilities")
            assert (refused.status_code, refused.json()["detail"]) == (
                401, "AAuth signature required")
        async with mesh.relay_client(key="anything") as keyed_relay:
            refused = await keyed_relay.post("/darkmesh/relay/posts/pull",
                                             json={"node_id": "node_a", "relay_key": "anything"})
            assert (refused.status_code, refused.json()["detail"]) == (
                401, "AAuth signature required")
        # The node key of a node is for the relay only: it does not open node routes.
        async with signed_node_client(mesh, "node_a", plan.keys["node_a"].node) as as_node:
            denied = await as_node.get("/darkmesh/capabilities")
            assert denied.status_code == 401
            assert denied.json()["reason"] == "unknown_thumbprint"
        async with signed_relay_client(mesh, a_operator) as operator_at_relay:
            denied = await operator_at_relay.post("/darkmesh/relay/posts/pull",
                                                  json={"node_id": "node_a"})
            assert (denied.status_code, denied.json()["reason"]) == (401, "unknown_thumbprint")
