"""Interop with the upstream v1 wire: an independent, deliberately naive "upstream" node.

``UpstreamNode`` follows wire-v1.md §3.6-3.10, §5 and §6 literally, with upstream's
weaknesses kept: secrets uniform in [1, p-2] (odd ones included), the pseudonym
``p_node_b``, no element validation, reveal tokens bound to nothing but request and
requester, consumed before the checks, one shared key everywhere, keys sent to message
URLs. It shares no code with ``darkmesh_warm_intro.v1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from darkmesh_warm_intro.v1.testing import (
    BASE_REQUEST,
    DEMO,
    PREFIX,
    RELAY_URL,
    SHARED_KEY,
    WAIT,
    Mesh,
    mesh,
    url_of,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
    "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
    "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
    "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
    "F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6"
    "955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)
NEXT_STEP = "Ask connector to forward an intro to the target contact."


def H(s: str) -> int:
    return int(hashlib.sha256(s.encode()).hexdigest(), 16) % P


def odd_secret() -> int:
    return (1 + secrets.randbelow(P - 2)) | 1  # upstream's range; odd to make the point


def as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.5


class UpstreamNode:
    """An upstream v1 node with its poller, as the spec describes it."""

    def __init__(self, m: Mesh, node_id: str, pseudonym: str) -> None:
        self.m = m
        self.node_id = node_id
        self.pseudonym = pseudonym
        self.url = url_of(node_id)
        data = DEMO[node_id]
        self.contacts = [dict(c) for c in data["contacts"]]
        self.interactions = [dict(i) for i in data["interactions"]]
        self.self_identifiers = list(data["self"])
        self.pending: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, dict[str, Any]] = {}
        self.reveal_calls = 0
        m.router.mount(self.url, self.app())

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.m.router, timeout=8)

    # §7
    def strength(self, contact: dict[str, Any]) -> float:
        email = (contact.get("email") or "").strip().lower()
        value = contact.get("strength", 0.5)
        for record in self.interactions:
            if (record.get("email") or "").strip().lower() == email:
                value = record.get("strength")
        return as_float(value)

    @staticmethod
    def matches(contact: dict[str, Any], target: dict[str, Any]) -> bool:
        company, role = target.get("company"), target.get("role")
        return (not company or company.lower() in (contact.get("org") or "").lower()) and (
            not role or role.lower() in (contact.get("role") or "").lower())

    # §3.9
    def psi_respond(self, body: dict[str, Any]) -> dict[str, Any]:
        request_id, requester_id = body.get("request_id"), body.get("requester_id")
        if not request_id or not requester_id:
            return {"request_id": request_id, "eligible": False}
        target = body.get("target") or {}
        matching = [c for c in self.contacts if self.matches(c, target)]
        x_values = (body.get("psi") or {}).get("x_values") or []
        if not matching or not x_values:
            return {"request_id": request_id, "eligible": False}
        b = odd_secret()
        token = secrets.token_hex(16)
        self.tokens[token] = {"created_at": time.time(), "request_id": request_id,
                              "requester_id": requester_id}
        return {
            "request_id": request_id, "eligible": True,
            "responder": {"node_id": self.node_id, "pseudonym_id": self.pseudonym,
                          "url": self.url},
            "responder_url": self.url,
            "target_strength": round(max([0.5, *(self.strength(c) for c in matching)]), 3),
            "reveal_token": token,
            "psi": {"protocol": "dh-psi-v1", "p": format(P, "x"),
                    "x_values_b": [format(pow(int(x, 16), b, P), "x") for x in x_values],
                    "y_values_b": [format(pow(H(s), b, P), "x")
                                   for s in self.self_identifiers]},
        }

    # §3.10 (token consumed before the checks, target re-matched from the body)
    def reveal(self, body: dict[str, Any]) -> dict[str, Any]:
        self.reveal_calls += 1
        rid = body.get("request_id")
        if not body.get("requester_id"):
            raise ValueError("requester_id is required")
        token = body.get("reveal_token")
        if not token:
            return {"request_id": rid, "approved": False, "reason": "missing_reveal_token"}
        entry = self.tokens.get(token)
        if entry is None:
            return {"request_id": rid, "approved": False, "reason": "invalid_reveal_token"}
        if entry["request_id"] != rid or entry["requester_id"] != body["requester_id"]:
            return {"request_id": rid, "approved": False, "reason": "reveal_token_mismatch"}
        del self.tokens[token]
        node = (body.get("candidate") or {}).get("responder_node_id")
        if node and node != self.node_id:
            return {"request_id": rid, "approved": False, "reason": "candidate_mismatch"}
        best = None
        for contact in self.contacts:
            if self.matches(contact, body.get("target") or {}) and (
                    best is None or self.strength(contact) >= self.strength(best)):
                best = contact
        if best is None:
            return {"request_id": rid, "approved": False, "reason": "no_target_match"}
        return {"request_id": rid, "approved": True, "intro": {
            "connector": {"node_id": self.node_id, "pseudonym_id": self.pseudonym},
            "target_contact": {k: best.get(k) for k in ("name", "email", "org", "role")},
            "relationship_strength": round(self.strength(best), 3), "next_step": NEXT_STEP}}

    # §3.6 and §6 steps 1-9
    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        identifiers = [(c.get("email") or "").strip().lower() for c in self.contacts]
        strengths = [self.strength(c) for c, e in zip(self.contacts, identifiers, strict=True) if e]
        identifiers = [e for e in identifiers if e]
        a = odd_secret()
        request_id, token = secrets.token_hex(4), secrets.token_hex(16)
        self.pending[request_id] = {"token": token, "answers": []}
        constraints = {"max_candidates": 3, "min_strength": 0.5, **body.get("constraints", {})}
        post = {
            "request_id": request_id, "requester_id": self.node_id, "requester_url": self.url,
            "template": "warm_intro_v1", "target": body["target"], "constraints": constraints,
            "psi": {"protocol": "dh-psi-v1", "p": format(P, "x"),
                    "x_values": [format(pow(H(e), a, P), "x") for e in identifiers]},
            "response_token": token, "ttl_seconds": 30, "relay_key": SHARED_KEY,
        }
        async with self.client() as client:
            r = await client.post(f"{RELAY_URL}/darkmesh/relay/posts", json=post,
                                  headers={"X-Darkmesh-Key": SHARED_KEY})
            r.raise_for_status()
        await asyncio.sleep(WAIT)
        slot = self.pending.pop(request_id)
        accepted: list[dict[str, Any]] = []
        for answer in slot["answers"]:
            if not answer.get("eligible"):
                continue
            block = answer.get("psi") or {}
            xb, yb = block.get("x_values_b") or [], block.get("y_values_b") or []
            if not xb or not yb:
                continue
            index = {int(x, 16): i for i, x in enumerate(xb)}
            hit = next((index[pow(int(y, 16), a, P)] for y in yb
                        if pow(int(y, 16), a, P) in index), None)
            if hit is None or hit >= len(identifiers):
                continue
            value = 0.6 * strengths[hit] + 0.4 * as_float(answer.get("target_strength"))
            responder = answer.get("responder") or {}
            pseudonym = responder.get("pseudonym_id", "unknown")
            url = answer.get("responder_url") or responder.get("url")
            if value < constraints["min_strength"] or not url or not answer.get("reveal_token"):
                continue
            if any(c["pseudonym_id"] == pseudonym for c in accepted):
                continue
            accepted.append({"pseudonym_id": pseudonym, "responder_node_id":
                             responder.get("node_id"), "responder_url": url.rstrip("/"),
                             "score": round(value, 3), "reveal_token": answer["reveal_token"]})
        accepted.sort(key=lambda c: c["score"], reverse=True)
        candidates = {secrets.token_hex(5): c for c in accepted[:constraints["max_candidates"]]}
        if candidates:
            self.sessions[request_id] = {"target": body["target"], "candidates": candidates}
        return {"request_id": request_id, "privacy_cost": round(0.1 * max(1, len(
            slot["answers"])), 3), "candidates": [
            {"pseudonym_id": c["pseudonym_id"], "score": c["score"], "requires_consent": True,
             "consent_id": cid} for cid, c in candidates.items()]}

    # §3.7
    async def consent(self, request_id: str, consent_id: str,
                      target: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        session = self.sessions[request_id]
        candidate = session["candidates"][consent_id]
        if "result" in candidate:
            return 200, candidate["result"]
        body = {"request_id": request_id, "requester_id": self.node_id,
                "template": "warm_intro_v1", "target": target or session["target"],
                "candidate": {"pseudonym_id": candidate["pseudonym_id"],
                              "responder_node_id": candidate["responder_node_id"]},
                "reveal_token": candidate["reveal_token"]}
        async with self.client() as client:
            r = await client.post(f"{candidate['responder_url']}{PREFIX}/reveal", json=body,
                                  headers={"X-Darkmesh-Key": SHARED_KEY})
        if r.status_code >= 300:
            return 502, {"detail": f"Reveal error: {r.status_code} {r.text}"}
        answer = r.json()
        result = {"request_id": request_id, "consent_id": consent_id,
                  "approved": bool(answer.get("approved")),
                  "pseudonym_id": candidate["pseudonym_id"],
                  "intro": answer.get("intro") if answer.get("approved") else None}
        candidate["result"] = result
        return 200, result

    # §6 steps 5-7
    async def poll_forever(self) -> None:
        cursor = 0
        async with self.client() as client:
            while True:
                r = await client.post(f"{RELAY_URL}/darkmesh/relay/posts/pull", json={
                    "node_id": self.node_id, "capabilities": ["warm_intro_v1"],
                    "cursor": cursor, "limit": 20, "relay_key": SHARED_KEY})
                data = r.json()
                cursor = data["cursor"]
                for post in data["posts"]:
                    answer = self.psi_respond({k: post.get(k) for k in (
                        "request_id", "requester_id", "target", "psi")})
                    if answer.get("eligible"):
                        await client.post(
                            f"{post['requester_url']}{PREFIX}/inbox/{post['request_id']}",
                            json={"response_token": post["response_token"],
                                  "response": answer},
                            headers={"X-Darkmesh-Key": SHARED_KEY})
                await asyncio.sleep(0.02)

    def app(self) -> Starlette:
        def authed(request: Request) -> bool:
            return request.headers.get("x-darkmesh-key") == SHARED_KEY

        async def inbox(request: Request) -> JSONResponse:
            if not authed(request):
                return JSONResponse({"detail": "invalid node key"}, 401)
            slot = self.pending.get(request.path_params["rid"])
            body = await request.json()
            if slot is None:
                return JSONResponse({"detail": "request not found"}, 404)
            if body.get("response_token") != slot["token"]:
                return JSONResponse({"detail": "invalid response_token"}, 403)
            slot["answers"].append(body.get("response") or body)
            return JSONResponse({"ok": True, "received": len(slot["answers"])})

        async def reveal(request: Request) -> JSONResponse:
            if not authed(request):
                return JSONResponse({"detail": "invalid node key"}, 401)
            return JSONResponse(self.reveal(await request.json()))

        return Starlette(routes=[
            Route(f"{PREFIX}/inbox/{{rid}}", inbox, methods=["POST"]),
            Route(f"{PREFIX}/reveal", reveal, methods=["POST"]),
        ])


@contextlib.asynccontextmanager
async def running(m: Mesh, node: UpstreamNode) -> AsyncIterator[UpstreamNode]:
    task = asyncio.create_task(node.poll_forever())
    try:
        yield node
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ------------------------------------------------- our requester, upstream responder


@pytest.mark.asyncio
async def test_our_requester_with_an_upstream_responder() -> None:
    async with mesh() as m:
        a = await m.add_node("node_a", peers=["node_b"])
        async with running(m, UpstreamNode(m, "node_b", "p_node_b")) as b, \
                a.operator(m.router) as client:
            r = await client.post(f"{PREFIX}/request", json=BASE_REQUEST)
            answer = r.json()
            assert answer["candidates"] == [{
                "pseudonym_id": "p_node_b", "score": 0.904, "requires_consent": True,
                "consent_id": answer["candidates"][0]["consent_id"]}]
            assert answer["privacy_cost"] == 0.1
            body = {"request_id": answer["request_id"],
                    "consent_id": answer["candidates"][0]["consent_id"]}
            first = (await client.post(f"{PREFIX}/consent", json=body)).json()
            second = (await client.post(f"{PREFIX}/consent", json=body)).json()
        assert first["approved"] is True
        assert first["intro"]["connector"] == {"node_id": "node_b", "pseudonym_id": "p_node_b"}
        assert first["intro"]["target_contact"]["name"] == "Taylor BD"
        assert first["intro"]["relationship_strength"] == 0.88
        assert second == first and b.reveal_calls == 1
        assert [e.side for e in a.events.events] == ["requester"]


# ------------------------------------------------- upstream requester, our responder


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["trust_message_urls", "configured_peer"])
async def test_upstream_requester_with_our_responder(how: str) -> None:
    async with mesh() as m:
        upstream_a = UpstreamNode(m, "node_a", "p_node_a")
        if how == "trust_message_urls":  # an upstream JSON config (DESIGN §11)
            b = await m.add_node("node_b", warm={"v1_trust_message_urls": True})
        else:
            b = await m.add_node("node_b", peers=["node_a"])
        m.poll(b)
        answer = await upstream_a.request(BASE_REQUEST)
        [candidate] = answer["candidates"]
        assert candidate["score"] == 0.904 and candidate["pseudonym_id"].startswith("p_")
        assert candidate["pseudonym_id"] != "p_node_b"
        status, result = await upstream_a.consent(answer["request_id"], candidate["consent_id"])
        assert status == 200 and result["approved"] is True
        assert result["intro"] == {
            "connector": {"node_id": "node_b", "pseudonym_id": candidate["pseudonym_id"]},
            "target_contact": {"name": "Taylor BD", "email": "taylor@companyx.com",
                               "org": "Company X", "role": "Business Development"},
            "relationship_strength": 0.88, "next_step": NEXT_STEP}
        assert [e.side for e in b.events.events] == ["responder"]


@pytest.mark.asyncio
async def test_reveal_binding_where_upstream_leaks() -> None:
    """Outcome 6 side by side: an upstream responder reveals Jordan Ops for a token minted
    for Company X; ours refuses and keeps the token for the real target."""
    async with mesh() as m:
        upstream_a = UpstreamNode(m, "node_a", "p_node_a")
        async with running(m, UpstreamNode(m, "node_b", "p_node_b")):
            answer = await upstream_a.request(BASE_REQUEST)
            cid = answer["candidates"][0]["consent_id"]
            _, leaked = await upstream_a.consent(answer["request_id"], cid,
                                                 target={"company": "Company Y"})
            assert leaked["intro"]["target_contact"]["name"] == "Jordan Ops"
        m.router.apps.pop(url_of("node_b"))
        b = await m.add_node("node_b", warm={"v1_trust_message_urls": True})
        m.poll(b)
        answer = await upstream_a.request(BASE_REQUEST)
        cid = answer["candidates"][0]["consent_id"]
        _, refused = await upstream_a.consent(answer["request_id"], cid,
                                              target={"company": "Company Y"})
        assert refused == {"request_id": answer["request_id"], "consent_id": cid,
                           "approved": False, "pseudonym_id": refused["pseudonym_id"],
                           "intro": None}
        assert b.v1.audit_log() == []


@pytest.mark.asyncio
async def test_upstream_requester_waits_for_our_operator_approval() -> None:
    async with mesh() as m:
        upstream_a = UpstreamNode(m, "node_a", "p_node_a")
        b = await m.add_node("node_b", warm={"v1_trust_message_urls": True,
                                             "v1_require_approval": True})
        m.poll(b)
        answer = await upstream_a.request(BASE_REQUEST)
        cid = answer["candidates"][0]["consent_id"]
        status, body = await upstream_a.consent(answer["request_id"], cid)
        assert status == 502 and "approval pending" in body["detail"]  # nothing cached
        [pending] = b.v1.pending_approvals()
        await b.v1.decide(pending["approval_id"], True)
        status, result = await upstream_a.consent(answer["request_id"], cid)
        assert status == 200 and result["approved"] is True
        assert result["intro"]["target_contact"]["name"] == "Taylor BD"
