"""Requester side of v1 end to end in-process: §3.6-3.8, §6 and the demo outcomes 1-5."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from darkmesh_warm_intro.context import WarmIntroContext
from darkmesh_warm_intro.v1 import V1Protocol, psi
from darkmesh_warm_intro.v1.keys import SESSION
from darkmesh_warm_intro.v1.testing import (
    BASE_REQUEST,
    DEMO,
    PREFIX,
    RELAY_URL,
    SHARED_KEY,
    WAIT,
    Mesh,
    demo_mesh,
    mesh,
    url_of,
)

REQUEST = f"{PREFIX}/request"
CONSENT = f"{PREFIX}/consent"


@contextlib.asynccontextmanager
async def demo(with_c: bool = False, **kwargs: Any) -> AsyncIterator[Mesh]:
    async with contextlib.AsyncExitStack() as stack:
        yield await demo_mesh(stack, with_c=with_c, **kwargs)


async def ask(m: Mesh, body: Any, node: str = "node_a") -> Any:
    async with m.nodes[node].operator(m.router) as client:
        if isinstance(body, (bytes, str)):
            return await client.post(REQUEST, content=body,
                                     headers={"content-type": "application/json"})
        return await client.post(REQUEST, json=body)


async def consent(m: Mesh, request_id: str, consent_id: str, node: str = "node_a") -> Any:
    async with m.nodes[node].operator(m.router) as client:
        return await client.post(CONSENT, json={"request_id": request_id,
                                                "consent_id": consent_id})


def published(m: Mesh) -> int:
    return len([s for s in m.router.to(f"{RELAY_URL}/darkmesh/relay/posts")
                if not s.url.endswith("/pull")])


# ------------------------------------------------------------ outcome 1: discovery


@pytest.mark.asyncio
async def test_discovery_one_candidate_with_demo_score() -> None:
    async with demo() as m:
        started = time.monotonic()
        r = await ask(m, BASE_REQUEST)
        elapsed = time.monotonic() - started
        assert r.status_code == 200, r.text
        answer = r.json()
        assert set(answer) == {"request_id", "candidates", "privacy_cost"}
        assert re.fullmatch(r"[0-9a-f]{32}", answer["request_id"])  # 128 bits (§10.1.12)
        [candidate] = answer["candidates"]
        assert set(candidate) == {"pseudonym_id", "score", "requires_consent", "consent_id"}
        assert candidate["score"] == 0.904
        assert candidate["requires_consent"] is True
        assert re.fullmatch(r"[0-9a-f]{10}", candidate["consent_id"])
        assert answer["privacy_cost"] == 0.1
        text = json.dumps(answer)
        for secret in ("node_b", url_of("node_b"), "@", "p_node_b"):
            assert secret not in text
        # v1 cannot know when every answer is in: the window is waited in full.
        assert elapsed >= WAIT


@pytest.mark.asyncio
async def test_discovery_with_c_drops_it_by_psi() -> None:
    async with demo(with_c=True) as m:
        r = await ask(m, BASE_REQUEST)
        answer = r.json()
        assert [c["score"] for c in answer["candidates"]] == [0.904]
        assert answer["privacy_cost"] == 0.2  # C's answer arrived and was discarded
        # C did answer eligible (its contact matches), so it minted a token.
        assert m.nodes["node_c"].v1.status()["reveal_tokens"] == 1


@pytest.mark.asyncio
async def test_post_on_the_relay_has_the_v1_wire_shape() -> None:
    async with demo() as m:
        await ask(m, BASE_REQUEST)
        [publish] = [s for s in m.router.to(f"{RELAY_URL}/darkmesh/relay/posts")
                     if not s.url.endswith("/pull")]
        post = json.loads(publish.body)
        assert post["template"] == "warm_intro_v1"
        assert post["requester_id"] == "node_a"
        assert post["requester_url"] == url_of("node_a")
        assert post["target"] == BASE_REQUEST["target"]
        assert post["constraints"] == {"max_candidates": 3, "min_strength": 0.5}
        assert post["psi"]["protocol"] == "dh-psi-v1" and post["psi"]["p"] == psi.P_HEX
        assert len(post["psi"]["x_values"]) == 2
        assert all(psi.legendre(int(x, 16)) == 1 for x in post["psi"]["x_values"])
        assert re.fullmatch(r"[0-9a-f]{32}", post["response_token"])
        assert post["ttl_seconds"] == 30
        assert post["relay_key"] == SHARED_KEY
        assert "x-darkmesh-key" not in publish.headers  # the node key stays home


# ------------------------------------------------------------ outcome 2: consent


@pytest.mark.asyncio
async def test_consent_reveals_taylor_and_caches_the_result() -> None:
    async with demo() as m:
        answer = (await ask(m, BASE_REQUEST)).json()
        [candidate] = answer["candidates"]
        first = await consent(m, answer["request_id"], candidate["consent_id"])
        assert first.status_code == 200, first.text
        body = first.json()
        assert body == {
            "request_id": answer["request_id"],
            "consent_id": candidate["consent_id"],
            "approved": True,
            "pseudonym_id": candidate["pseudonym_id"],
            "intro": {
                "connector": {"node_id": "node_b", "pseudonym_id": candidate["pseudonym_id"]},
                "target_contact": {"name": "Taylor BD", "email": "taylor@companyx.com",
                                   "org": "Company X", "role": "Business Development"},
                "relationship_strength": 0.88,
                "next_step": "Ask connector to forward an intro to the target contact.",
            },
        }
        reveals = len(m.router.to(f"{url_of('node_b')}{PREFIX}/reveal"))
        second = await consent(m, answer["request_id"], candidate["consent_id"])
        assert second.json() == body
        assert len(m.router.to(f"{url_of('node_b')}{PREFIX}/reveal")) == reveals == 1

        # intro.revealed once per side, never for the cached consent, never with the email.
        [mine] = m.nodes["node_a"].events.events
        [theirs] = m.nodes["node_b"].events.events
        assert mine.side == "requester" and theirs.side == "responder"
        assert mine.consent_id == candidate["consent_id"] and theirs.consent_id is None
        for event in (mine, theirs):
            assert event.requester_node_id == "node_a" and event.responder_node_id == "node_b"
            assert event.template == "warm_intro_v1"
            assert event.request_id == answer["request_id"]
            assert event.contact.model_dump() == {"name": "Taylor BD", "org": "Company X",
                                                  "role": "Business Development"}
            assert event.target.company == "Company X"
            assert event.relationship_strength == 0.88
            assert "@" not in event.model_dump_json()
        assert m.nodes["node_b"].v1.audit_log()[-1]["outcome"] == "approved"


@pytest.mark.asyncio
async def test_reveal_call_carries_the_session_target_and_the_peer_key() -> None:
    async with demo() as m:
        answer = (await ask(m, BASE_REQUEST)).json()
        [candidate] = answer["candidates"]
        await consent(m, answer["request_id"], candidate["consent_id"])
        [call] = m.router.to(f"{url_of('node_b')}{PREFIX}/reveal")
        body = json.loads(call.body)
        assert body["request_id"] == answer["request_id"]
        assert body["requester_id"] == "node_a"
        assert body["template"] == "warm_intro_v1"
        assert body["target"] == BASE_REQUEST["target"]
        assert body["candidate"] == {"pseudonym_id": candidate["pseudonym_id"],
                                     "responder_node_id": "node_b"}
        assert re.fullmatch(r"[0-9a-f]{32}", body["reveal_token"])
        # B is a configured peer of A: the peer key (never the operator key) goes there.
        assert call.headers["x-darkmesh-key"] == SHARED_KEY


@pytest.mark.asyncio
async def test_consent_survives_a_restart_of_the_protocol_object() -> None:
    async with demo() as m:
        a = m.nodes["node_a"]
        answer = (await ask(m, BASE_REQUEST)).json()
        fresh = V1Protocol(WarmIntroContext.create(a.host, a.skill.ctx.settings))
        assert fresh.owns_request(answer["request_id"])
        result = await fresh.consent(answer["request_id"],
                                     answer["candidates"][0]["consent_id"])
        assert result["approved"] is True
        assert result["intro"]["target_contact"]["name"] == "Taylor BD"


@pytest.mark.asyncio
async def test_consent_errors() -> None:
    async with demo() as m:
        answer = (await ask(m, BASE_REQUEST)).json()
        rid, cid = answer["request_id"], answer["candidates"][0]["consent_id"]
        r = await consent(m, "deadbeef", cid)
        assert (r.status_code, r.json()["detail"]) == (404, "request_id not found or expired")
        r = await consent(m, rid, "0000000000")
        assert (r.status_code, r.json()["detail"]) == (404, "consent_id not found")
        assert m.nodes["node_a"].v1.owns_request(rid)
        assert not m.nodes["node_a"].v1.owns_request("deadbeef")


@pytest.mark.asyncio
async def test_request_without_candidates_opens_no_session() -> None:
    async with demo() as m:
        body = {**BASE_REQUEST, "constraints": {"min_strength": 0.95}}
        answer = (await ask(m, body)).json()
        assert answer["candidates"] == []
        r = await consent(m, answer["request_id"], "0000000000")
        assert (r.status_code, r.json()["detail"]) == (404, "request_id not found or expired")


@pytest.mark.asyncio
async def test_reveal_failure_is_502_and_not_cached() -> None:
    async with demo() as m:
        answer = (await ask(m, BASE_REQUEST)).json()
        rid, cid = answer["request_id"], answer["candidates"][0]["consent_id"]
        b_app = m.router.apps.pop(url_of("node_b"))
        r = await consent(m, rid, cid)
        assert r.status_code == 502
        assert r.json()["detail"].startswith("Reveal error: ConnectError")
        m.router.apps[url_of("node_b")] = b_app
        r = await consent(m, rid, cid)
        assert r.status_code == 200 and r.json()["approved"] is True


@pytest.mark.asyncio
async def test_candidate_without_usable_url_is_502() -> None:
    async with demo() as m:
        a = m.nodes["node_a"]
        answer = (await ask(m, BASE_REQUEST)).json()
        rid, cid = answer["request_id"], answer["candidates"][0]["consent_id"]
        session = a.skill.ctx.state.get(SESSION + rid)
        session["candidates"][cid]["responder_url"] = "gopher://node-b.test"
        a.skill.ctx.state.put(SESSION + rid, session, ttl=60)
        r = await consent(m, rid, cid)
        assert (r.status_code, r.json()["detail"]) == (502, "candidate responder url unavailable")


@pytest.mark.asyncio
async def test_concurrent_consents_reveal_once() -> None:
    async with demo() as m:
        answer = (await ask(m, BASE_REQUEST)).json()
        rid, cid = answer["request_id"], answer["candidates"][0]["consent_id"]
        results = await asyncio.gather(*(consent(m, rid, cid) for _ in range(4)))
        bodies = [r.json() for r in results]
        assert all(b == bodies[0] for b in bodies) and bodies[0]["approved"] is True
        assert len(m.router.to(f"{url_of('node_b')}{PREFIX}/reveal")) == 1
        assert len(m.nodes["node_a"].events.events) == 1


# --------------------------------------------------- outcomes 3-5 and §3.6 errors


@pytest.mark.asyncio
async def test_thresholds_and_matching() -> None:
    async with demo() as m:
        high = await ask(m, {**BASE_REQUEST, "constraints": {"min_strength": 0.95}})
        assert high.json()["candidates"] == []
        lower = await ask(m, {**BASE_REQUEST,
                              "target": {"company": "company x", "role": "business"}})
        assert [c["score"] for c in lower.json()["candidates"]] == [0.904]
        tokens_before = m.nodes["node_b"].v1.status()["reveal_tokens"]
        none = await ask(m, {**BASE_REQUEST, "target": {"company": "Company Z", "role": None}})
        assert none.json()["candidates"] == []
        assert none.json()["privacy_cost"] == 0.1
        assert m.nodes["node_b"].v1.status()["reveal_tokens"] == tokens_before


@pytest.mark.asyncio
async def test_max_candidates_keeps_the_best() -> None:
    async with demo(with_c=True) as m:
        # Make C connected too: A knows carol, weaker than casey.
        a = m.nodes["node_a"]
        await a.host.store.upsert("contacts", [{"name": "Carol", "email": "carol@elsewhere.com",
                                               "org": "Elsewhere", "role": "x",
                                               "strength": 0.6}])
        both = (await ask(m, BASE_REQUEST)).json()["candidates"]
        assert [c["score"] for c in both] == [0.904, round(0.6 * 0.6 + 0.4 * 0.97, 3)]
        one = (await ask(m, {**BASE_REQUEST, "constraints": {"max_candidates": 1}})).json()
        assert [c["score"] for c in one["candidates"]] == [0.904]


@pytest.mark.asyncio
@pytest.mark.parametrize("body", [
    {"template": "warm_intro_v1"},                                         # target missing
    {**BASE_REQUEST, "target": "Company X"},
    {**BASE_REQUEST, "target": {"company": 5}},
    {**BASE_REQUEST, "constraints": {"max_candidates": 11}},
    {**BASE_REQUEST, "constraints": {"max_candidates": 0}},
    {**BASE_REQUEST, "constraints": {"min_strength": 1.5}},
    {**BASE_REQUEST, "constraints": {"min_strength": -0.1}},
    {**BASE_REQUEST, "constraints": {"max_candidates": "many"}},
    {**BASE_REQUEST, "template": 7},
    b"[1, 2]",
    b"{not json",
])
async def test_request_shape_errors_are_422_and_publish_nothing(body: Any) -> None:
    async with demo() as m:
        r = await ask(m, body)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert isinstance(detail, list) and {"type", "loc", "msg"} <= set(detail[0])
        assert published(m) == 0


@pytest.mark.asyncio
async def test_request_policy_errors() -> None:
    async with demo() as m:
        r = await ask(m, {**BASE_REQUEST, "template": "warm_intro_v9"})
        assert (r.status_code, r.json()["detail"]) == (400, "Template not allowed: warm_intro_v9")
        for target in ({}, {"company": None, "role": None}, {"company": " ", "role": ""},
                       {"other": "Company X"}):
            r = await ask(m, {**BASE_REQUEST, "target": target})
            assert r.status_code == 400, target
            assert r.json()["detail"].startswith("target must name a company or a role")
        assert published(m) == 0


@pytest.mark.asyncio
async def test_v1_disabled_refuses_the_template() -> None:
    async with mesh() as m:
        await m.add_node("node_a", warm={"v1_enabled": False})
        r = await ask(m, BASE_REQUEST)
        assert (r.status_code, r.json()["detail"]) == (400, "Template not allowed: warm_intro_v1")


@pytest.mark.asyncio
async def test_contacts_errors() -> None:
    async with mesh() as m:
        await m.add_node("node_a", data={"self": [], "contacts": []})
        r = await ask(m, BASE_REQUEST)
        assert (r.status_code, r.json()["detail"]) == (400, "contacts integration has no records")
        await m.add_node("node_x", data={"contacts": [{"name": "No Mail", "org": "O"}]})
        r = await ask(m, BASE_REQUEST, node="node_x")
        assert (r.status_code, r.json()["detail"]) == (400, "No contacts available")


@pytest.mark.asyncio
async def test_relay_errors() -> None:
    async with mesh() as m:
        await m.add_node("node_a", relay_url="")
        r = await ask(m, BASE_REQUEST)
        assert (r.status_code, r.json()["detail"]) == (500, "relay_url not configured")
        a2 = await m.add_node("node_x", data=DEMO["node_a"], relay_url="http://gone.test")
        r = await ask(m, BASE_REQUEST, node="node_x")
        assert r.status_code == 502
        assert r.json()["detail"].startswith("Relay error: relay http://gone.test unreachable")
        await m.add_node("node_y", data=DEMO["node_a"], relay_key="wrong-key")
        r = await ask(m, BASE_REQUEST, node="node_y")
        assert (r.status_code, r.json()["detail"]) == (
            502, "Relay error: relay answered 403: invalid relay_key")
        assert not a2.v1.requester.pending  # the pending slot is discarded


@pytest.mark.asyncio
async def test_large_contact_sets_are_capped() -> None:
    contacts = [{"name": f"P{i}", "email": f"p{i}@x.test", "org": "O", "role": "R",
                 "strength": i / 10} for i in range(6)]
    async with mesh() as m:
        await m.add_node("node_a", data={"contacts": contacts}, warm={"max_contacts": 3})
        r = await ask(m, BASE_REQUEST)
        assert r.status_code == 200
        [publish] = [s for s in m.router.to(f"{RELAY_URL}/darkmesh/relay/posts")
                     if not s.url.endswith("/pull")]
        assert len(json.loads(publish.body)["psi"]["x_values"]) == 3


# ------------------------------------------------------------------ §3.8 inbox


async def open_request(m: Mesh, body: dict[str, Any] | None = None
                       ) -> tuple[asyncio.Task[Any], dict[str, Any]]:
    """Start a request on A (nobody polling) and return it with the post as published."""
    task = asyncio.create_task(ask(m, body or BASE_REQUEST))
    for _ in range(200):
        calls = [s for s in m.router.to(f"{RELAY_URL}/darkmesh/relay/posts")
                 if not s.url.endswith("/pull")]
        if calls:
            return task, json.loads(calls[0].body)
        await asyncio.sleep(0.005)
    raise AssertionError("nothing published")


def genuine_answer(post: dict[str, Any], self_ids: tuple[str, ...] = ("casey@connector.com",),
                   **changes: Any) -> dict[str, Any]:
    xs = [psi.decode(x) for x in post["psi"]["x_values"]]
    block = psi.responder_answer(xs, self_ids)
    answer = {
        "request_id": post["request_id"], "eligible": True,
        "responder": {"node_id": "node_b", "pseudonym_id": "p_x", "url": url_of("node_b")},
        "responder_url": url_of("node_b"), "target_strength": 0.88,
        "reveal_token": "t" * 32, "psi": psi.psi_block(block),
    }
    answer.update(changes)
    return answer


async def deliver(m: Mesh, request_id: str, body: Any, key: str = SHARED_KEY) -> Any:
    async with m.nodes["node_a"].peer(m.router, key) as client:
        url = f"{PREFIX}/inbox/{request_id}"
        if isinstance(body, bytes):
            return await client.post(url, content=body)
        return await client.post(url, json=body)


@pytest.mark.asyncio
async def test_inbox_checks_and_counts() -> None:
    async with mesh() as m:
        await m.add_node("node_a")
        task, post = await open_request(m)
        rid, token = post["request_id"], post["response_token"]
        r = await deliver(m, "unknown", {"response_token": token})
        assert (r.status_code, r.json()["detail"]) == (404, "request not found")
        r = await deliver(m, rid, {"response_token": "nope"})
        assert (r.status_code, r.json()["detail"]) == (403, "invalid response_token")
        r = await deliver(m, rid, {"response": {}})
        assert (r.status_code, r.json()["detail"]) == (403, "invalid response_token")
        r = await deliver(m, rid, b"[]")
        assert r.status_code == 422
        r = await deliver(m, rid, {"response_token": token}, key="operator-key-a1b2c3")
        assert (r.status_code, r.json()["detail"]) == (401, "invalid node key")
        r = await deliver(m, rid, {"response_token": token, "response": genuine_answer(post)})
        assert r.json() == {"ok": True, "received": 1}
        # An empty response stores the whole body as the answer (and counts).
        r = await deliver(m, rid, {"response_token": token, "response": {}})
        assert r.json() == {"ok": True, "received": 2}
        answer = (await task).json()
        assert [c["score"] for c in answer["candidates"]] == [0.904]
        assert answer["privacy_cost"] == 0.2
        # After the window: late answers find no request.
        r = await deliver(m, rid, {"response_token": token, "response": genuine_answer(post)})
        assert (r.status_code, r.json()["detail"]) == (404, "request not found")


def _forged(post: dict[str, Any], kind: str) -> dict[str, Any]:
    good = genuine_answer(post)
    xb, yb = good["psi"]["x_values_b"], good["psi"]["y_values_b"]
    p_minus_1 = psi.encode(psi.P - 1)
    psi_changes: dict[str, Any] = {
        "identity": {"x_values_b": ["1", *xb[1:]], "y_values_b": ["1"]},
        "minus_one": {"x_values_b": [p_minus_1, *xb[1:]], "y_values_b": [p_minus_1]},
        "zero": {"x_values_b": ["0", *xb[1:]], "y_values_b": ["0"]},
        "too_big": {"x_values_b": [psi.encode(psi.P + 1), *xb[1:]]},
        "duplicates": {"x_values_b": [xb[0]] * len(xb)},
        "short": {"x_values_b": xb[:1]},
        "non_hex": {"x_values_b": ["not-hex", *xb[1:]]},
        "no_y": {"y_values_b": []},
        "y_not_list": {"y_values_b": yb[0]},
    }
    if kind in psi_changes:
        return {**good, "psi": {**good["psi"], **psi_changes[kind]}}
    answer_changes: dict[str, dict[str, Any]] = {
        "strength_above_one": {"target_strength": 5},
        "strength_negative": {"target_strength": -0.1},
        "strength_text": {"target_strength": "high"},
        "strength_object": {"target_strength": {"v": 1}},
        "strength_bool": {"target_strength": True},
        "no_token": {"reveal_token": ""},
        "bad_url": {"responder_url": "javascript:alert(1)", "responder": {"url": "ftp://x"}},
        "not_eligible": {"eligible": "yes"},
        "psi_missing": {"psi": None},
    }
    return {**good, **answer_changes[kind]}


FORGERIES = ["identity", "minus_one", "zero", "too_big", "duplicates", "short", "non_hex",
             "no_y", "y_not_list", "strength_above_one", "strength_negative", "strength_text",
             "strength_object", "strength_bool", "no_token", "bad_url", "not_eligible",
             "psi_missing"]


@pytest.mark.asyncio
async def test_forged_and_malformed_answers_are_dropped_not_500() -> None:
    async with mesh() as m:
        await m.add_node("node_a")
        task, post = await open_request(m)
        for kind in FORGERIES:
            r = await deliver(m, post["request_id"], {"response_token": post["response_token"],
                                                      "response": _forged(post, kind)})
            assert r.status_code == 200, (kind, r.text)
        answer = (await task).json()
        assert answer["candidates"] == []
        assert answer["privacy_cost"] == round(0.1 * len(FORGERIES), 3)


@pytest.mark.asyncio
async def test_answer_rules_missing_strength_duplicates_and_url_fallback() -> None:
    async with mesh() as m:
        await m.add_node("node_a")
        task, post = await open_request(m)
        token = post["response_token"]
        missing = genuine_answer(post)
        del missing["target_strength"]  # upstream: missing means 0.5
        missing["responder_url"] = None  # falls back to responder.url
        dup = genuine_answer(post, target_strength=1.0)  # same pseudonym: first wins
        other = genuine_answer(post, target_strength="0.9",
                               responder={"node_id": "n2", "pseudonym_id": "p_y",
                                          "url": url_of("node_b")})
        for answer in (missing, dup, other):
            r = await deliver(m, post["request_id"], {"response_token": token,
                                                      "response": answer})
            assert r.status_code == 200
        result = (await task).json()
        scores = [c["score"] for c in result["candidates"]]
        assert scores == [round(0.6 * 0.92 + 0.4 * 0.9, 3), round(0.6 * 0.92 + 0.4 * 0.5, 3)]
        assert result["candidates"][1]["pseudonym_id"] == "p_x"


@pytest.mark.asyncio
async def test_scores_stay_in_unit_interval_with_extreme_strengths() -> None:
    data = {"contacts": [{"name": "Casey", "email": "casey@connector.com", "org": "C",
                          "role": "A", "strength": 7}]}
    async with mesh() as m:
        await m.add_node("node_a", data=data)
        task, post = await open_request(m)
        r = await deliver(m, post["request_id"], {"response_token": post["response_token"],
                                                  "response": genuine_answer(post,
                                                                             target_strength=1)})
        assert r.status_code == 200
        [candidate] = (await task).json()["candidates"]
        assert candidate["score"] == 1.0


@pytest.mark.asyncio
async def test_v1_through_the_installed_skill() -> None:
    """The real darkmesh-warm-intro skill mounts this protocol and dispatches to it."""
    async with mesh() as m:
        await m.add_node("node_a", peers=["node_b"], real_skill=True)
        b = await m.add_node("node_b", peers=["node_a"], real_skill=True)
        m.poll(b)
        r = await ask(m, BASE_REQUEST)
        assert r.status_code == 200, r.text
        [candidate] = r.json()["candidates"]
        assert candidate["score"] == 0.904
        c = await consent(m, r.json()["request_id"], candidate["consent_id"])
        assert c.json()["intro"]["target_contact"]["name"] == "Taylor BD"


@pytest.mark.asyncio
async def test_inbox_flood_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from darkmesh_warm_intro.v1 import requester

    monkeypatch.setattr(requester, "MAX_ANSWERS", 2)
    monkeypatch.setattr(requester, "MAX_PSI_EVALUATIONS", 1)
    async with mesh() as m:
        await m.add_node("node_a")
        task, post = await open_request(m)
        token = post["response_token"]
        first = genuine_answer(post)
        second = genuine_answer(post, target_strength=1.0,
                                responder={"node_id": "n2", "pseudonym_id": "p_2",
                                           "url": url_of("node_b")})
        for answer in (first, second):
            r = await deliver(m, post["request_id"], {"response_token": token,
                                                      "response": answer})
            assert r.status_code == 200
        r = await deliver(m, post["request_id"], {"response_token": token, "response": first})
        assert (r.status_code, r.json()["detail"]) == (
            429, f"too many answers for request {post['request_id']}")
        result = (await task).json()
        # One exponentiation of budget: only the first answer was scored.
        assert [c["pseudonym_id"] for c in result["candidates"]] == ["p_x"]
        assert result["privacy_cost"] == 0.2
