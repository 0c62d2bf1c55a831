"""Responder side of v1: psi/respond (§3.9), reveal (§3.10), outcome 6, approvals, budget."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from darkmesh_warm_intro.v1 import psi
from darkmesh_warm_intro.v1.testing import (
    BASE_REQUEST,
    PREFIX,
    Mesh,
    Node,
    mesh,
    mint,
    post_body,
    respond,
    reveal,
    reveal_body,
    url_of,
)

TAYLOR = {"name": "Taylor BD", "email": "taylor@companyx.com", "org": "Company X",
          "role": "Business Development"}


@contextlib.asynccontextmanager
async def responder(**warm: Any) -> AsyncIterator[tuple[Mesh, Node]]:
    async with mesh() as m:
        yield m, await m.add_node("node_b", warm=warm)


# ------------------------------------------------------------------ §3.9 psi/respond


@pytest.mark.asyncio
async def test_eligible_answer_shape() -> None:
    async with responder() as (m, b):
        body, own = post_body("req-1")
        r = await respond(m, b, body)
        answer = r.json()
        assert set(answer) == {"request_id", "eligible", "responder", "responder_url",
                               "target_strength", "reveal_token", "psi"}
        assert answer["request_id"] == "req-1" and answer["eligible"] is True
        assert answer["responder"]["node_id"] == "node_b"
        assert answer["responder"]["url"] == answer["responder_url"] == url_of("node_b")
        assert answer["target_strength"] == 0.88
        assert re.fullmatch(r"[0-9a-f]{32}", answer["reveal_token"])
        block = answer["psi"]
        assert block["protocol"] == "dh-psi-v1" and block["p"] == psi.P_HEX
        assert len(block["x_values_b"]) == 2 and len(block["y_values_b"]) == 1
        # Even secret: everything B emits is a quadratic residue (§10.1 item 11).
        for value in block["x_values_b"] + block["y_values_b"]:
            assert psi.legendre(int(value, 16)) == 1
        hit = psi.intersection_index(own, block["x_values_b"], block["y_values_b"], max_y=5)
        assert hit is not None and own.strengths[hit] == 0.5


@pytest.mark.asyncio
async def test_pseudonyms_are_opaque_and_fresh_per_request() -> None:
    async with responder() as (m, b):
        first = await mint(m, b, "req-1")
        second = await mint(m, b, "req-2")
        names = {first["responder"]["pseudonym_id"], second["responder"]["pseudonym_id"]}
        assert len(names) == 2
        assert all("node_b" not in n and re.fullmatch(r"p_[0-9a-f]{16}", n) for n in names)


def _psi(x_values: Any, **extra: Any) -> dict[str, Any]:
    return {"protocol": "dh-psi-v1", "p": psi.P_HEX, "x_values": x_values, **extra}


@pytest.mark.asyncio
async def test_ineligible_cases_answer_200_never_500() -> None:
    async with responder(v1_max_post_values=3) as (m, b):
        good, _ = post_body("req-1")
        x = good["psi"]["x_values"]
        cases: list[tuple[dict[str, Any], Any]] = [
            ({**good, "request_id": ""}, None),
            ({**good, "request_id": None}, None),
            ({**good, "request_id": 17}, None),
            ({k: v for k, v in good.items() if k != "request_id"}, None),
            ({**good, "requester_id": ""}, "req-1"),
            ({**good, "requester_id": ["node_a"]}, "req-1"),
            ({**good, "request_id": "../../etc"}, "../../etc"),       # not URL-path safe
            ({**good, "target": {"company": "Company Z"}}, "req-1"),
            ({**good, "target": {}}, "req-1"),                        # empty target (§10.1.2)
            ({**good, "target": {"company": "", "role": None}}, "req-1"),
            ({**good, "target": "Company X"}, "req-1"),
            ({**good, "psi": _psi([])}, "req-1"),
            ({**good, "psi": {}}, "req-1"),
            ({**good, "psi": None}, "req-1"),
            ({**good, "psi": _psi(["0", *x[1:]])}, "req-1"),
            ({**good, "psi": _psi(["1", *x[1:]])}, "req-1"),
            ({**good, "psi": _psi([psi.encode(psi.P - 1)])}, "req-1"),
            ({**good, "psi": _psi([psi.P_HEX])}, "req-1"),
            ({**good, "psi": _psi(["zz-not-hex"])}, "req-1"),
            ({**good, "psi": _psi([12345])}, "req-1"),
            ({**good, "psi": _psi("abc")}, "req-1"),
            ({**good, "psi": _psi(x * 2)}, "req-1"),                  # over the cap
            ({**good, "psi": _psi(x, protocol="dh-psi-v9")}, "req-1"),
            ({**good, "psi": _psi(x, p="17")}, "req-1"),
        ]
        for body, echo in cases:
            r = await respond(m, b, body)
            assert r.status_code == 200, (body, r.text)
            assert r.json() == {"request_id": echo, "eligible": False}, body
        assert b.v1.status()["reveal_tokens"] == 0


@pytest.mark.asyncio
async def test_values_in_any_case_with_padding_are_accepted() -> None:
    async with responder() as (m, b):
        body, own = post_body("req-1")
        body["psi"]["x_values"] = ["00" + x.upper() for x in body["psi"]["x_values"]]
        del body["psi"]["p"]  # optional; upstream never checks it
        answer = (await respond(m, b, body)).json()
        assert answer["eligible"] is True
        block = answer["psi"]
        assert psi.intersection_index(own, block["x_values_b"], block["y_values_b"],
                                      max_y=5) is not None


@pytest.mark.asyncio
async def test_no_self_identifiers_means_not_eligible() -> None:
    async with mesh() as m:
        b = await m.add_node("node_b", data={"self": [], "contacts": [TAYLOR]})
        body, _ = post_body("req-1")
        assert (await respond(m, b, body)).json() == {"request_id": "req-1", "eligible": False}


@pytest.mark.asyncio
async def test_psi_respond_needs_the_operator_credential() -> None:
    async with responder() as (m, b):
        body, _ = post_body("req-1")
        async with b.peer(m.router) as client:  # the peer key opens inbox/reveal only
            r = await client.post(f"{PREFIX}/psi/respond", json=body)
        assert (r.status_code, r.json()["detail"]) == (401, "invalid node key")
        async with b.operator(m.router) as client:
            r = await client.post(f"{PREFIX}/psi/respond", content=b"[1]",
                                  headers={"content-type": "application/json"})
        assert r.status_code == 422


@pytest.mark.asyncio
async def test_budget_per_requester() -> None:
    async with responder(budget_requests=2, budget_window_seconds=60) as (m, b):
        await mint(m, b, "req-1")
        await mint(m, b, "req-1")  # the same post again costs nothing
        await mint(m, b, "req-2")
        body, _ = post_body("req-3")
        r = await respond(m, b, body)
        assert r.status_code == 429
        assert r.json()["detail"] == (
            "budget exceeded for requester 'node_a': at most 2 answered requests per 60 s "
            "(warm_intro.budget_requests)")
        # Another requester has its own budget; ineligible posts cost nothing.
        await mint(m, b, "req-3", requester_id="node_z")
        body, _ = post_body("req-4", target={"company": "Company Z"})
        assert (await respond(m, b, body)).json()["eligible"] is False


@pytest.mark.asyncio
async def test_budget_refusal_on_the_listener_path_sends_nothing() -> None:
    async with mesh() as m:
        await m.add_node("node_a")
        b = await m.add_node("node_b", peers=["node_a"], warm={"budget_requests": 1})
        for rid in ("r1", "r2"):
            body, _ = post_body(rid)
            await b.v1.handle_post({**body, "requester_url": url_of("node_a"),
                                    "response_token": "t", "template": "warm_intro_v1"})
        inbox_calls = m.router.to(f"{url_of('node_a')}{PREFIX}/inbox/")
        assert [c.url.rsplit("/", 1)[1] for c in inbox_calls] == ["r1"]


# ---------------------------------------------------------------------- §3.10 reveal


@pytest.mark.asyncio
async def test_reveal_approves_the_bound_contact_once() -> None:
    async with responder() as (m, b):
        answer = await mint(m, b)
        r = await reveal(m, b, reveal_body(answer))
        assert r.status_code == 200
        assert r.json() == {
            "request_id": "req-1", "approved": True,
            "intro": {"connector": {"node_id": "node_b",
                                    "pseudonym_id": answer["responder"]["pseudonym_id"]},
                      "target_contact": TAYLOR, "relationship_strength": 0.88,
                      "next_step": "Ask connector to forward an intro to the target contact."},
        }
        # A repeat (a requester whose call timed out) gets the same answer, no new event.
        again = await reveal(m, b, reveal_body(answer))
        assert again.json() == r.json()
        assert len(b.events.events) == 1
        # Single use: nothing else can be done with the token.
        other = await reveal(m, b, reveal_body(answer, request_id="req-2"))
        assert other.json() == {"request_id": "req-2", "approved": False,
                                "reason": "invalid_reveal_token"}
        other = await reveal(m, b, reveal_body(answer, target={"company": "Company Y"}))
        assert other.json()["reason"] == "invalid_reveal_token"
        outcomes = [e["outcome"] for e in b.v1.audit_log()]
        assert outcomes == ["approved", "repeat"]


@pytest.mark.asyncio
async def test_reveal_refusals_in_order() -> None:
    async with responder() as (m, b):
        answer = await mint(m, b)
        r = await reveal(m, b, reveal_body(answer, requester_id=""))
        assert (r.status_code, r.json()["detail"]) == (400, "requester_id is required")
        r = await reveal(m, b, reveal_body(answer, requester_id=None, reveal_token=""))
        assert (r.status_code, r.json()["detail"]) == (400, "requester_id is required")

        def reason(resp: Any) -> str:
            assert resp.status_code == 200, resp.text
            assert resp.json()["approved"] is False
            return str(resp.json()["reason"])

        assert reason(await reveal(m, b, reveal_body(answer, reveal_token=""))) == \
            "missing_reveal_token"
        assert reason(await reveal(m, b, reveal_body(answer, reveal_token=7))) == \
            "missing_reveal_token"
        assert reason(await reveal(m, b, reveal_body(answer, reveal_token="f" * 32))) == \
            "invalid_reveal_token"
        # Outcome 6: the token is bound to request, requester and target; all keep it.
        assert reason(await reveal(m, b, reveal_body(answer, request_id="req-2"))) == \
            "reveal_token_mismatch"
        assert reason(await reveal(m, b, reveal_body(answer, requester_id="node_x"))) == \
            "reveal_token_mismatch"
        jordan = await reveal(m, b, reveal_body(answer, target={"company": "Company Y",
                                                                "role": None}))
        assert reason(jordan) == "reveal_token_mismatch" and "Jordan" not in jordan.text
        assert reason(await reveal(m, b, reveal_body(answer, target={}))) == "no_target_match"
        assert reason(await reveal(m, b, reveal_body(answer, target=None))) == "no_target_match"
        r = await reveal(m, b, reveal_body(answer, template="warm_intro_v9"))
        assert (r.status_code, r.json()["detail"]) == (400, "Template not allowed: warm_intro_v9")
        wrong = reveal_body(answer, candidate={"pseudonym_id": "p", "responder_node_id": "n"})
        assert reason(await reveal(m, b, wrong)) == "candidate_mismatch"
        # None of these consumed the token (§10.1 item 12).
        ok = await reveal(m, b, reveal_body(answer, target={"company": "company x",
                                                            "role": "business development"}))
        assert ok.json()["approved"] is True
        assert ok.json()["intro"]["target_contact"] == TAYLOR
        assert b.events.events[0].side == "responder"


@pytest.mark.asyncio
async def test_reveal_with_no_candidate_field_is_accepted() -> None:
    async with responder() as (m, b):
        answer = await mint(m, b)
        body = reveal_body(answer)
        del body["candidate"], body["template"]
        assert (await reveal(m, b, body)).json()["approved"] is True


@pytest.mark.asyncio
async def test_reveal_refuses_when_the_bound_contact_is_gone() -> None:
    async with responder() as (m, b):
        answer = await mint(m, b)
        await b.host.store.delete("contacts", ["taylor@companyx.com"])
        r = await reveal(m, b, reveal_body(answer))
        assert r.json()["reason"] == "no_target_match"


@pytest.mark.asyncio
async def test_reveal_only_ever_shows_the_contact_chosen_at_answer_time() -> None:
    async with responder() as (m, b):
        answer = await mint(m, b)
        # A stronger match appears after the answer: the token still reveals Taylor.
        await b.host.store.upsert("contacts", [{"name": "New BD", "email": "new@companyx.com",
                                                "org": "Company X",
                                                "role": "Business Development",
                                                "strength": 0.99}])
        r = await reveal(m, b, reveal_body(answer))
        assert r.json()["intro"]["target_contact"] == TAYLOR


@pytest.mark.asyncio
async def test_reveal_route_needs_the_peer_key() -> None:
    async with responder() as (m, b):
        answer = await mint(m, b)
        async with b.operator(m.router) as client:
            r = await client.post(f"{PREFIX}/reveal", json=reveal_body(answer))
        assert (r.status_code, r.json()["detail"]) == (401, "invalid node key")
        async with b.peer(m.router) as client:
            r = await client.post(f"{PREFIX}/reveal", content=b'"x"',
                                  headers={"content-type": "application/json"})
        assert r.status_code == 422


@pytest.mark.asyncio
async def test_concurrent_reveals_emit_once() -> None:
    async with responder() as (m, b):
        answer = await mint(m, b)
        results = await asyncio.gather(*(reveal(m, b, reveal_body(answer)) for _ in range(5)))
        assert all(r.json()["approved"] is True for r in results)
        assert len(b.events.events) == 1


# --------------------------------------------------------- approvals (§10.2 item 3)


@pytest.mark.asyncio
async def test_approval_pending_then_approved() -> None:
    async with responder(v1_require_approval=True) as (m, b):
        answer = await mint(m, b)
        r = await reveal(m, b, reveal_body(answer))
        assert (r.status_code, r.json()["detail"]) == (409, "approval pending")
        again = await reveal(m, b, reveal_body(answer))
        assert again.status_code == 409
        [pending] = b.v1.pending_approvals()
        assert set(pending) == {"approval_id", "template", "request_id", "requester_id",
                                "target", "created_at", "state"}
        assert pending["state"] == "pending" and pending["requester_id"] == "node_a"
        assert pending["target"] == BASE_REQUEST["target"]
        assert b.events.events == []
        decided = await b.v1.decide(pending["approval_id"], True)
        assert decided["state"] == "approved"
        assert b.v1.pending_approvals() == []
        ok = await reveal(m, b, reveal_body(answer))
        assert ok.json()["approved"] is True
        assert ok.json()["intro"]["target_contact"] == TAYLOR
        assert len(b.events.events) == 1
        assert b.v1.status()["pending_approvals"] == 0


@pytest.mark.asyncio
async def test_approval_declined_is_final() -> None:
    async with responder(v1_require_approval=True) as (m, b):
        answer = await mint(m, b)
        assert (await reveal(m, b, reveal_body(answer))).status_code == 409
        [pending] = b.v1.pending_approvals()
        await b.v1.decide(pending["approval_id"], False)
        r = await reveal(m, b, reveal_body(answer))
        assert r.json() == {"request_id": "req-1", "approved": False, "reason": "declined"}
        assert (await reveal(m, b, reveal_body(answer))).json()["reason"] == "declined"
        with pytest.raises(Exception, match="already declined"):
            await b.v1.decide(pending["approval_id"], True)
        with pytest.raises(Exception, match="approval_id not found"):
            await b.v1.decide("v1a_nope", True)
        assert b.events.events == []
        assert [e["outcome"] for e in b.v1.audit_log()] == ["declined", "repeat"]


@pytest.mark.asyncio
async def test_approval_mode_a_stranger_gets_no_contact_fields_without_approval() -> None:
    """Outcome 7 on v1 (DESIGN §11 issue 02): a party that shares no identifier with B
    still gets a reveal token from the v1 wire, but B's operator decides the reveal."""
    async with responder(v1_require_approval=True) as (m, b):
        body, _ = post_body("req-d", requester_id="node_d", emails=("dave@nowhere.test",))
        answer = (await respond(m, b, body)).json()
        assert answer["eligible"] is True  # v1 cannot condition this on the intersection
        r = await reveal(m, b, reveal_body(answer, requester_id="node_d"))
        assert r.status_code == 409
        assert "taylor" not in r.text.lower()
        [pending] = b.v1.pending_approvals()
        assert pending["requester_id"] == "node_d"
