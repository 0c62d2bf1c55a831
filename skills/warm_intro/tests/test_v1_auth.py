"""Signed callers on the v1 routes (aauth.md §4.1-4.2, wire-v1.md §10.1 items 6-7):
capabilities by route and identity bound to the signer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from darkmesh_warm_intro.v1.testing import PREFIX, Mesh, Node, mesh, mint, post_body, reveal_body

from sdl_core import InboundRequest, VerifiedAgent

ALL_PEER = frozenset({"node.callback.consent", "node.callback.reveal"})


class HeaderVerifier:
    """Trusts ``Signature-Key: <sub>|<cap,cap>``: a stand-in for the AAuth verifier."""

    def ready(self) -> bool:
        return True

    async def verify(self, request: InboundRequest, *, authorities: Sequence[str],
                     remember_once: Any) -> VerifiedAgent:
        sub, _, caps = (request.header("signature-key") or "").partition("|")
        return VerifiedAgent(
            sub=sub, iss="test", thumbprint="t", public_jwk={}, algorithm="EdDSA", label=sub,
            capabilities=frozenset(c for c in caps.split(",") if c),
            node_id=sub.split("@", 1)[1] if "@" in sub else sub,
        )

    def status(self) -> dict[str, Any]:
        return {}


async def signed_node(m: Mesh, node_id: str) -> Node:
    node = await m.add_node(node_id, auth_mode="either")
    node.host.verifier = HeaderVerifier()
    return node


async def call(m: Mesh, node: Node, path: str, body: dict[str, Any], sub: str,
               caps: frozenset[str] | set[str]) -> httpx.Response:
    headers = {"Signature-Key": f"{sub}|{','.join(sorted(caps))}", "Signature": "sig=:x:",
               "Signature-Input": "sig=()"}
    async with httpx.AsyncClient(transport=m.router, base_url=node.url) as client:
        return await client.post(f"{PREFIX}{path}", json=body, headers=headers)


@pytest.mark.asyncio
async def test_inbox_binds_the_responder_node_id_to_the_signer() -> None:
    async with mesh() as m:
        a = await signed_node(m, "node_a")
        slot_id = "r" * 8
        from darkmesh_warm_intro.v1 import psi
        from darkmesh_warm_intro.v1.requester import PendingRequest

        a.v1.requester.pending[slot_id] = PendingRequest(
            response_token="tok", own=psi.requester_set([("x@y.test", 0.5)]))
        answer = {"response_token": "tok", "response": {"responder": {"node_id": "node_c"}}}
        r = await call(m, a, f"/inbox/{slot_id}", answer, "darkmesh-node@node_b", ALL_PEER)
        assert (r.status_code, r.json()["detail"]) == (
            403, "AAuth sub 'darkmesh-node@node_b' does not match responder node_id 'node_c'")
        r = await call(m, a, f"/inbox/{slot_id}", answer, "darkmesh-node@node_c",
                       {"node.callback.reveal"})
        assert (r.status_code, r.json()["detail"]) == (
            403, ("agent 'darkmesh-node@node_c' is not permitted to use capability "
                  "'node.callback.consent'"))
        r = await call(m, a, f"/inbox/{slot_id}", answer, "darkmesh-node@node_c", ALL_PEER)
        assert r.json() == {"ok": True, "received": 1}


@pytest.mark.asyncio
async def test_reveal_binds_requester_id_to_the_signer() -> None:
    async with mesh() as m:
        b = await signed_node(m, "node_b")
        answer = await mint(m, b)  # operator key still works in mode either
        r = await call(m, b, "/reveal", reveal_body(answer), "darkmesh-node@node_x", ALL_PEER)
        assert (r.status_code, r.json()["detail"]) == (
            403, "AAuth sub 'darkmesh-node@node_x' does not match requester_id 'node_a'")
        r = await call(m, b, "/reveal", reveal_body(answer), "darkmesh-node@node_a", ALL_PEER)
        assert r.status_code == 200 and r.json()["approved"] is True


@pytest.mark.asyncio
async def test_psi_respond_needs_node_respond_and_this_node_as_signer() -> None:
    async with mesh() as m:
        b = await signed_node(m, "node_b")
        body, _ = post_body("req-1")
        # Upstream maps psi/respond to a peer capability; Darkmesh does not.
        r = await call(m, b, "/psi/respond", body, "darkmesh-node@node_b", ALL_PEER)
        assert (r.status_code, r.json()["detail"]) == (
            403, ("agent 'darkmesh-node@node_b' is not permitted to use capability "
                  "'node.respond'"))
        r = await call(m, b, "/psi/respond", body, "darkmesh-node@node_a", {"node.respond"})
        assert (r.status_code, r.json()["detail"]) == (
            403, "AAuth sub 'darkmesh-node@node_a' does not match node_id 'node_b'")
        r = await call(m, b, "/psi/respond", body, "darkmesh-node@node_b", {"node.respond"})
        assert r.status_code == 200 and r.json()["eligible"] is True


@pytest.mark.asyncio
async def test_routes_declare_capabilities_and_contracts() -> None:
    async with mesh() as m:
        routes = (await m.add_node("node_a")).v1.routes()
    table = {(r.path, r.methods, r.capability, r.bound_field) for r in routes}
    assert table == {
        ("/inbox/{request_id}", ("POST",), "node.callback.consent", "response.responder.node_id"),
        ("/psi/respond", ("POST",), "node.respond", "signer is this node"),
        ("/reveal", ("POST",), "node.callback.reveal", "requester_id"),
    }
    assert all(r.request_model is not None and r.response_model is not None for r in routes)
