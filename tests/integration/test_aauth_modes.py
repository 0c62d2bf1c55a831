"""``either`` mode interoperates with ``hmac``-only peers (aauth.md §5, §5.3 migration):
a signing node and a shared-key node meet at an ``either`` relay for v2, trade v1
intros over configured peers with the peer key, or sign v1 calls to each other with the
peer capabilities; a signed request never falls back to a shared key."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from aauth_kit import (
    BASE_REQUEST,
    PEER_CAPABILITIES,
    SKILL,
    TAYLOR,
    AAuthMeshPlan,
    accepted,
    approve_and_reveal,
    build_mesh,
    identity,
    ingest_demo,
    plan_mesh,
    signed_node_client,
    signed_relay_client,
)

from sdl_core.testing.host import TEST_NODE_KEY, TEST_PEER_KEY
from sdl_core.testing.mesh import MESH_RELAY_KEY, InProcessMesh, node_url

V1_REQUEST = {**BASE_REQUEST, "template": "warm_intro_v1"}


def operator_client(mesh: InProcessMesh, plan: AAuthMeshPlan, node_id: str,
                    **kwargs: Any) -> httpx.AsyncClient:
    """A signing node's operator signs; an hmac node's operator uses the node key."""
    if plan.modes[node_id] == "hmac":
        return mesh.client(node_id, key=TEST_NODE_KEY, **kwargs)
    return signed_node_client(mesh, node_id, plan.keys[node_id].operator, **kwargs)


async def relay_nodes(mesh: InProcessMesh) -> int:
    assert mesh.relay is not None
    return len(await mesh.relay.backend.list_nodes())


async def start(mesh: InProcessMesh, plan: AAuthMeshPlan) -> None:
    for node_id in plan.modes:
        await ingest_demo(mesh, plan, node_id, node_key=TEST_NODE_KEY)

    async def all_registered() -> bool:
        return await relay_nodes(mesh) == len(plan.modes)

    await mesh.wait_until(all_registered, timeout=10)


@pytest.mark.asyncio
async def test_v2_between_a_signing_node_and_an_hmac_node(tmp_path: Path) -> None:
    plan = plan_mesh(tmp_path, {"node_a": "either", "node_b": "hmac"}, relay_mode="either")
    async with build_mesh(plan, relay_key=MESH_RELAY_KEY, node_key=TEST_NODE_KEY,
                          peer_key=TEST_PEER_KEY) as mesh:
        a_host, b_host = mesh.nodes["node_a"], mesh.nodes["node_b"]
        assert a_host.relay is not None and a_host.relay.signing()
        assert b_host.relay is not None and not b_host.relay.signing()
        await start(mesh, plan)
        async with operator_client(mesh, plan, "node_a", timeout=30) as a, \
                operator_client(mesh, plan, "node_b") as b:
            answer = (await a.post(f"{SKILL}/request", json=BASE_REQUEST)).json()
            assert (answer["live_nodes"], answer["answered"]) == (1, 1), answer
            (candidate,) = answer["candidates"]
            assert candidate["score"] == 0.904
            consent = {"request_id": answer["request_id"], "consent_id": candidate["consent_id"]}
            assert (await a.post(f"{SKILL}/consent", json=consent)).json()["state"] == "pending"
            approval, result = await approve_and_reveal(mesh, a, b, consent)
            assert approval["requester_node_id"] == "node_a"
            assert result["intro"]["target_contact"] == TAYLOR
        # The relay served both schemes; each node used only its own.
        assert mesh.relay is not None
        assert accepted(mesh.relay.metrics, "aauth") > 0
        assert accepted(mesh.relay.metrics, "shared-key") > 0


@pytest.mark.asyncio
async def test_v1_between_an_either_node_and_an_hmac_peer(tmp_path: Path) -> None:
    plan = plan_mesh(tmp_path, {"node_a": "either", "node_b": "hmac"}, relay_mode="either")
    peers = {"node_a": [{"node_id": "node_b", "url": node_url("node_b"), "auth": "hmac"}],
             "node_b": [{"node_id": "node_a", "url": node_url("node_a"), "auth": "hmac"}]}
    async with build_mesh(plan, relay_key=MESH_RELAY_KEY, node_key=TEST_NODE_KEY,
                          peer_key=TEST_PEER_KEY, peers=peers,
                          response_wait_seconds=1.5) as mesh:
        await start(mesh, plan)
        async with operator_client(mesh, plan, "node_a", timeout=30) as a:
            answer = (await a.post(f"{SKILL}/request", json=V1_REQUEST)).json()
            (candidate,) = answer["candidates"]
            assert candidate["score"] == 0.904
            consent = await a.post(f"{SKILL}/consent", json={
                "request_id": answer["request_id"], "consent_id": candidate["consent_id"]})
            assert consent.status_code == 200, consent.text
            intro = consent.json()["intro"]
            assert intro["target_contact"]["email"] == TAYLOR["email"]
            assert intro["connector"]["node_id"] == "node_b"
        # A's operator and connectors sign, so the shared-key requests A accepted are B's
        # answers to its inbox, with the peer key; B (hmac) took A's reveal call likewise.
        assert accepted(mesh.nodes["node_a"].metrics, "shared-key") > 0
        assert accepted(mesh.nodes["node_a"].metrics, "aauth") > 0


@pytest.mark.asyncio
async def test_v1_signed_between_either_nodes_with_peer_capabilities(tmp_path: Path) -> None:
    """Migration step 2 for v1 peers: each node trusts the other's node key with
    ``node.callback.consent,node.callback.reveal`` and calls it signed (peer auth aauth);
    the peer key is not configured at all."""
    from aauth_kit import node_keys

    keys = {n: node_keys(n) for n in ("node_a", "node_b")}
    as_peer = {n: keys[n].node.granting(PEER_CAPABILITIES) for n in keys}
    plan = plan_mesh(tmp_path, {"node_a": "either", "node_b": "either"}, relay_mode="aauth",
                     extra_node_agents={"node_a": [as_peer["node_b"]],
                                        "node_b": [as_peer["node_a"]]})
    plan.keys.update(keys)  # the same keys everywhere: rewrite every registry with them
    plan.relay_agents[:] = [keys["node_a"].node, keys["node_b"].node]
    plan.write_relay_trust()
    for node_id in keys:
        other = "node_b" if node_id == "node_a" else "node_a"
        plan.node_agents[node_id] = [keys[node_id].operator, *keys[node_id].connectors.values(),
                                     as_peer[other]]
        plan.write_node_trust(node_id)
    peers = {"node_a": [{"node_id": "node_b", "url": node_url("node_b"), "auth": "aauth"}],
             "node_b": [{"node_id": "node_a", "url": node_url("node_a"), "auth": "aauth"}]}
    async with build_mesh(plan, node_key=TEST_NODE_KEY, peers=peers,
                          response_wait_seconds=1.5) as mesh:
        for host in mesh.nodes.values():
            assert host.settings.peer_key.get_secret_value() == ""
        await start(mesh, plan)
        async with operator_client(mesh, plan, "node_a", timeout=30) as a:
            answer = (await a.post(f"{SKILL}/request", json=V1_REQUEST)).json()
            (candidate,) = answer["candidates"]
            consent = await a.post(f"{SKILL}/consent", json={
                "request_id": answer["request_id"], "consent_id": candidate["consent_id"]})
            assert consent.status_code == 200, consent.text
            assert consent.json()["intro"]["target_contact"]["name"] == "Taylor BD"
        # No peer key exists, so A's inbox and B's reveal route were reached signed only.
        for host in mesh.nodes.values():
            assert accepted(host.metrics, "shared-key") == 0

        # A peer grant opens the peer routes only, never the operator's.
        async with signed_node_client(mesh, "node_a", as_peer["node_b"]) as peer_b:
            denied = await peer_b.get("/darkmesh/capabilities")
            assert (denied.status_code, denied.json()["detail"]) == (
                403, "agent 'darkmesh-node@node_b' is not permitted to use capability "
                     "'node.query'")


@pytest.mark.asyncio
async def test_either_never_falls_back_from_a_bad_signature_to_the_key(tmp_path: Path) -> None:
    plan = plan_mesh(tmp_path, {"node_a": "either"}, relay_mode="either")
    stranger = identity("darkmesh-node@node_a", ("*",))  # the right sub, an unknown key
    async with build_mesh(plan, relay_key=MESH_RELAY_KEY, node_key=TEST_NODE_KEY,
                          peer_key=TEST_PEER_KEY) as mesh:
        pull = {"node_id": "node_a", "capabilities": mesh.nodes["node_a"].templates()}
        # The relay: key alone works, key plus a bad signature does not.
        async with mesh.relay_client() as keyed:
            ok = await keyed.post("/darkmesh/relay/posts/pull",
                                  json={**pull, "relay_key": MESH_RELAY_KEY})
            assert ok.status_code == 200, ok.text
        async with signed_relay_client(mesh, stranger,
                                       headers={"X-Darkmesh-Key": MESH_RELAY_KEY}) as both:
            refused = await both.post("/darkmesh/relay/posts/pull",
                                      json={**pull, "relay_key": MESH_RELAY_KEY})
            assert (refused.status_code, refused.json()["reason"]) == (401, "unknown_thumbprint")
        # The node: the same for its operator routes.
        async with mesh.client("node_a", key=TEST_NODE_KEY) as keyed_node:
            assert (await keyed_node.get("/darkmesh/capabilities")).status_code == 200
        async with signed_node_client(mesh, "node_a", stranger,
                                      headers={"X-Darkmesh-Key": TEST_NODE_KEY}) as both_node:
            refused = await both_node.get("/darkmesh/capabilities")
            assert (refused.status_code, refused.json()["reason"]) == (401, "unknown_thumbprint")
        async with signed_node_client(mesh, "node_a", plan.keys["node_a"].operator) as signed:
            assert (await signed.get("/darkmesh/capabilities")).status_code == 200
