"""Hostile inputs against protocol v2: each is refused with a clear reason and leaves
no state behind (outcome 6 reveal binding, forged/replayed replies, bad elements,
oversized lists, budgets, and what an unconnected node can learn)."""

from __future__ import annotations

import base64
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from darkmesh_warm_intro import psi
from darkmesh_warm_intro.sealing import NodeKeys, seal
from darkmesh_warm_intro.testing import LoopbackMesh, MeshNode, add_demo_node
from darkmesh_warm_intro.v2 import exchange

from sdl_core import HTTPProblem, MailboxMessage

from .test_v2_flow import BASE_TARGET, ask


def last_reason(node: MeshNode) -> str:
    return node.skill.v2.core.outcomes[-1].reason


def b_state(mesh: LoopbackMesh) -> list[tuple[str, Any]]:
    area = mesh.nodes["node_b"].host.state("warm_intro")
    return [(k, v) for k, v in area.items("v2:") if not k.startswith("v2:seen:")]


async def demo(tmp_path: Path, **b_settings: Any) -> LoopbackMesh:
    mesh = LoopbackMesh(tmp_path)
    await add_demo_node(mesh, "a")
    await add_demo_node(mesh, "b", **b_settings)
    await add_demo_node(mesh, "c")
    return mesh


def stored_request(node: MeshNode, request_id: str) -> dict[str, Any]:
    record = node.host.state("warm_intro").get("v2:req:" + request_id)
    assert record is not None
    return dict(record)


async def send_reveal(mesh: LoopbackMesh, sender: str, request_id: str, token: str,
                      target: Any) -> MeshNode:
    node = mesh.nodes[sender]
    b_key = node.skill.v2.core.pins.pinned("node_b")
    if b_key is None:  # a node that never met B learns its key from nowhere but B's card
        b_key = mesh.nodes["node_b"].skill.v2.core.keys.public
    await node.skill.v2.core.send(to="node_b", to_key=b_key, request_id=request_id,
                                  kind="reveal_request",
                                  body={"reveal_token": token, "target": target})
    await mesh.drain()
    return mesh.nodes["node_b"]


# ------------------------------------------------------------ outcome 6: reveal binding


@pytest.mark.asyncio
async def test_reveal_token_bound_to_request_requester_and_target(tmp_path: Path) -> None:
    mesh = await demo(tmp_path, approval_policy="auto")
    a, b = mesh.nodes["node_a"], mesh.nodes["node_b"]
    answer = await ask(a)
    token = stored_request(a, answer["request_id"])["candidates"][0]["reveal_token"]
    other = await ask(a, {"company": "Company Y"})
    await ask(mesh.nodes["node_c"])  # C becomes a known requester at B (its key is pinned)
    before = b_state(mesh)
    cases = [
        ("node_a", other["request_id"], BASE_TARGET, "reveal_token_mismatch"),  # other request
        ("node_a", answer["request_id"], {"company": "Company Y"}, "reveal_token_mismatch"),
        ("node_a", answer["request_id"], {}, "reveal_token_mismatch"),
        ("node_c", answer["request_id"], BASE_TARGET, "reveal_token_mismatch"),  # other requester
        ("node_a", answer["request_id"] + "0", BASE_TARGET, "reveal_token_mismatch"),
        ("node_a", answer["request_id"], BASE_TARGET, None),
    ]
    for sender, request_id, target, reason in cases[:-1]:
        await send_reveal(mesh, sender, request_id, token, target)
        assert last_reason(b) == reason
        assert b.skill.v2.core.audit_log() == []
    # refusals left B's tokens, approvals and budgets as they were
    assert [k for k, _ in b_state(mesh) if not k.startswith("v2:pin")] == \
        [k for k, _ in before if not k.startswith("v2:pin")]
    forged = await send_reveal(mesh, "node_a", answer["request_id"], "f" * 32, BASE_TARGET)
    assert last_reason(forged) == "invalid_reveal_token"
    # the genuine consent still works after all of that: nothing was consumed
    await a.skill.v2.requester.consent(answer["request_id"], answer["candidates"][0]["consent_id"])
    await mesh.drain()
    assert a.skill.v2.requester.view(answer["request_id"])["candidates"][0]["state"] == "revealed"
    # single use: the same token again is refused and reveals nothing more
    audit = b.skill.v2.core.audit_log()
    await send_reveal(mesh, "node_a", answer["request_id"], token, BASE_TARGET)
    assert last_reason(b) == "reveal_token_used"
    assert b.skill.v2.core.audit_log() == audit
    await mesh.close()


# --------------------------------------------------------- forged and replayed replies


@pytest.mark.asyncio
async def test_replayed_reply_is_refused(tmp_path: Path) -> None:
    mesh = await demo(tmp_path)
    a = mesh.nodes["node_a"]
    answer = await ask(a)
    reply = next(s for s in a.inbox if s.message.sender == "node_b")
    before = stored_request(a, answer["request_id"])
    await a.skill.handle_mailbox(reply.message)
    assert last_reason(a) == "replayed"
    again = MailboxMessage(**{**reply.message.__dict__, "id": "other-relay-id"})
    await a.skill.handle_mailbox(again)
    assert last_reason(a) == "replayed"
    assert stored_request(a, answer["request_id"]) == before
    await mesh.close()


@pytest.mark.asyncio
async def test_forged_reply_with_another_key_is_refused(tmp_path: Path) -> None:
    mesh = await demo(tmp_path)
    a = mesh.nodes["node_a"]
    answer = await ask(a)
    before = stored_request(a, answer["request_id"])
    eve = NodeKeys.generate()
    payload = seal(eve, sender="node_b", recipient="node_a",
                   recipient_key=a.skill.v2.core.keys.public, request_id=answer["request_id"],
                   kind="refusal", body={"reason": "x"})
    message = MailboxMessage(id="m1", to="node_a", sender="node_b", sender_verified=False,
                             request_id=answer["request_id"],
                             payload=base64.b64encode(payload).decode(), created_at=0.0)
    assert await a.skill.handle_mailbox(message) is True
    assert last_reason(a) == "key_changed"
    assert stored_request(a, answer["request_id"]) == before
    assert a.skill.v2.core.pins.listing()["pending_changes"][0]["node_id"] == "node_b"
    await mesh.close()


@pytest.mark.asyncio
async def test_reply_claiming_another_responder(tmp_path: Path) -> None:
    mesh = await demo(tmp_path)
    a, c = mesh.nodes["node_a"], mesh.nodes["node_c"]
    first = await ask(a)
    b_reply = next(s for s in a.inbox if s.message.sender == "node_b")
    # 1. the relay authenticated node_c but the envelope says node_b
    spoof = MailboxMessage(**{**b_reply.message.__dict__, "sender": "node_c",
                              "sender_verified": True})
    before = stored_request(a, first["request_id"])
    await a.skill.handle_mailbox(spoof)
    assert last_reason(a) == "sender_mismatch"
    assert stored_request(a, first["request_id"]) == before
    # 2. C re-sends B's PSI body under its own identity: bound to node_b, it matches nothing
    a2 = await ask(a)
    b_body = _psi_body_sent(mesh, "node_b", a2["request_id"])
    record = stored_request(a, a2["request_id"])
    context_c = exchange.binding(a2["request_id"], "node_a", "node_c")
    assert exchange.open_reply(
        scalar=base64.b64decode(record["scalar"]), real_count=record["real_count"],
        padded_count=record["padded_count"], y_blob=base64.b64decode(b_body["y"]),
        entries=base64.b64decode(b_body["entries"]),
        ciphertext=base64.b64decode(b_body["payload"]), context=context_c) is None
    assert c.node_id == "node_c"
    await mesh.close()


def _psi_body_sent(mesh: LoopbackMesh, sender: str, request_id: str) -> dict[str, Any]:
    """Open (as the recipient) the psi_reply ``sender`` sent for ``request_id``."""
    from darkmesh_warm_intro.sealing import open_sealed

    sent = next(s for s in mesh.sent if s.message.sender == sender
                and s.message.request_id == request_id)
    recipient = mesh.nodes[sent.message.to]
    return open_sealed(recipient.skill.v2.core.keys, sent.raw, recipient=sent.message.to).body


async def _rogue_reply(mesh: LoopbackMesh, request_id: str, body: dict[str, Any]) -> MeshNode:
    rogue = mesh.nodes["node_c"]
    a = mesh.nodes["node_a"]
    await rogue.skill.v2.core.send(to="node_a", to_key=a.skill.v2.core.keys.public,
                                   request_id=request_id, kind="psi_reply", body=body)
    await mesh.drain()
    return a


@pytest.mark.asyncio
@pytest.mark.parametrize(("mutate", "reason_text"), [
    (lambda y: psi.IDENTITY + y[32:], "not a valid non-identity"),
    (lambda y: b"\xff" * 32 + y[32:], "not a valid non-identity"),
    (lambda y: y[:32] + y[:32] + y[64:], "duplicate"),
    (lambda y: y[:-32], "expected 8"),
])
async def test_invalid_elements_in_a_reply(tmp_path: Path, mutate: Any, reason_text: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    mesh = LoopbackMesh(tmp_path)
    a = await add_demo_node(mesh, "a", response_wait_seconds=0.3)
    c = await add_demo_node(mesh, "c")
    c.skill.v2.handle_post = _ignore  # type: ignore[method-assign]
    from darkmesh_warm_intro.matching import Target
    from darkmesh_warm_intro.models import ConstraintsModel

    started = await a.skill.v2.requester.start(Target.from_json(BASE_TARGET), ConstraintsModel())
    await mesh.drain()
    record = stored_request(a, started["request_id"])
    good = exchange.build_reply(
        elements=psi.decode_elements(base64.b64decode(mesh.nodes["node_c"].posts_seen[-1]["psi"]["elements"])),
        own_identifiers=["carol@elsewhere.com"], payload={"match": False},
        context=exchange.binding(started["request_id"], "node_a", "node_c"))
    body = {"protocol": exchange.PROTOCOL, "y": base64.b64encode(mutate(good.y_blob)).decode(),
            "entries": base64.b64encode(good.entries).decode(),
            "payload": base64.b64encode(good.ciphertext).decode()}
    await _rogue_reply(mesh, started["request_id"], body)
    outcome = a.skill.v2.core.outcomes[-1]
    assert outcome.reason == "invalid_reply"
    assert stored_request(a, started["request_id"]) == record
    assert reason_text in caplog.text  # the detail is logged with the stable code
    await mesh.close()


async def _ignore(post: dict[str, Any]) -> None:
    return None


@pytest.mark.asyncio
async def test_invalid_and_oversized_posts_get_a_refusal(tmp_path: Path) -> None:
    mesh = await demo(tmp_path, max_contacts=20)
    a, b = mesh.nodes["node_a"], mesh.nodes["node_b"]
    key = base64.b64encode(a.skill.v2.core.keys.public).decode()

    def post(elements: bytes, request_id: str) -> dict[str, Any]:
        return {"request_id": request_id, "requester_id": "node_a", "template": "warm_intro_v2",
                "target": BASE_TARGET,
                "psi": {"protocol": exchange.PROTOCOL, "requester_key": key,
                        "elements": base64.b64encode(elements).decode()}}

    valid = [psi.random_element() for _ in range(16)]
    cases = {
        "r-identity": b"".join([psi.IDENTITY, *valid[1:]]),
        "r-duplicate": b"".join([valid[0], *valid[:15]]),
        "r-oversized": b"".join(psi.random_element() for _ in range(64)),
        "r-unpadded": b"".join(valid[:5]),
    }
    tokens_before = len(b.host.state("warm_intro").items("v2:tok:"))
    for request_id, blob in cases.items():
        outcome = await b.skill.v2.handle_post(post(blob, request_id))
        assert not outcome.accepted
        expected = "too_many_elements" if request_id == "r-oversized" else "invalid_elements"
        assert outcome.reason == expected, request_id
    assert len(b.host.state("warm_intro").items("v2:tok:")) == tokens_before
    await mesh.close()


@pytest.mark.asyncio
async def test_requester_refuses_oversized_contact_set(tmp_path: Path) -> None:
    mesh = LoopbackMesh(tmp_path)
    many = [{"name": f"n{i}", "email": f"p{i}@x.example", "org": "X", "role": "R"}
            for i in range(30)]
    a = await mesh.add_node("node_a", contacts=many, warm_intro={"max_contacts": 20})
    with pytest.raises(HTTPProblem) as info:
        await ask(a)
    assert info.value.status == 413 and "exceeds the cap of 20" in str(info.value.detail)
    assert mesh._seq == 0  # nothing published
    await mesh.close()


@pytest.mark.asyncio
async def test_budget_is_reported_and_enforced(tmp_path: Path) -> None:
    mesh = await demo(tmp_path, budget_requests=2)
    a, b = mesh.nodes["node_a"], mesh.nodes["node_b"]
    first = await ask(a)
    assert first["privacy_cost"] == 0.5  # 1 of B's 2 requests for node_a this window
    second = await ask(a)
    assert second["privacy_cost"] == 1.0
    tokens = len(b.host.state("warm_intro").items("v2:tok:"))
    third = await ask(a)
    assert third["refused"] == 1 and third["answered"] == 2 and third["candidates"] == []
    assert last_reason(b) == "budget_exceeded"
    assert len(b.host.state("warm_intro").items("v2:tok:")) == tokens
    await mesh.close()


# ------------------------------------------------- an unconnected node learns nothing


def _chi_square(data: bytes) -> float:
    counts = Counter(data)
    expected = len(data) / 256
    return sum((counts.get(v, 0) - expected) ** 2 / expected for v in range(256))


@pytest.mark.asyncio
async def test_unconnected_node_sees_only_random_bytes(tmp_path: Path) -> None:
    mesh = LoopbackMesh(tmp_path)
    await add_demo_node(mesh, "b")  # knows Taylor at Company X
    await mesh.add_node("node_e", contacts=[  # knows nobody at Company X
        {"name": "E", "email": "e@e.example", "org": "Elsewhere", "role": "Ops"}],
        self_identifiers=["erin@e.example"])
    contacts = [{"name": f"n{i}", "email": f"d{i}@d.example", "org": "D", "role": "R"}
                for i in range(1000)]
    d = await mesh.add_node("node_d", contacts=contacts, self_identifiers=["dana@d.example"])
    answers = [await ask(d) for _ in range(2)]
    assert all(x["candidates"] == [] and x["answered"] == 2 for x in answers)
    bodies = {(s, x["request_id"]): _psi_body_sent(mesh, s, x["request_id"])
              for s in ("node_b", "node_e") for x in answers}
    shapes = {k: tuple(len(base64.b64decode(v[f])) for f in ("y", "entries", "payload"))
              for k, v in bodies.items()}
    assert len(set(shapes.values())) == 1  # B (matches the target) looks like E (does not)
    limit = 255 + 6 * math.sqrt(2 * 255)  # chi-square, 255 dof, ~6 sigma
    for body in bodies.values():
        entries = base64.b64decode(body["entries"])
        assert len(entries) == 1024 * exchange.ENTRY_BYTES
        assert _chi_square(entries) < limit
        y = psi.decode_elements(base64.b64decode(body["y"]), expected=exchange.Y_ELEMENTS)
        assert len(y) == exchange.Y_ELEMENTS
    # fresh scalars per reply: two replies of B share no element and no entry
    b1, b2 = (bodies[("node_b", x["request_id"])] for x in answers)
    assert not set(psi.decode_elements(base64.b64decode(b1["y"]))) & set(
        psi.decode_elements(base64.b64decode(b2["y"])))
    # D stored nothing from B but the fact that B answered
    for _, stored in d.host.state("warm_intro").items("v2:ans:"):
        assert stored["matched"] is False and "pseudonym_id" not in stored
    await mesh.close()


@pytest.mark.asyncio
async def test_reveal_request_from_a_stranger_pins_nothing(tmp_path: Path) -> None:
    mesh = LoopbackMesh(tmp_path)
    b = await add_demo_node(mesh, "b", approval_policy="auto")
    stranger = await mesh.add_node("node_x", contacts=[
        {"name": "X", "email": "x@x.example", "org": "X", "role": "X"}])
    await stranger.skill.v2.core.send(to="node_b", to_key=b.skill.v2.core.keys.public,
                                      request_id="0123456789abcdef", kind="reveal_request",
                                      body={"reveal_token": "t" * 32, "target": BASE_TARGET})
    await mesh.drain()
    assert last_reason(b) == "unknown_sender"
    assert b.skill.v2.core.pins.pinned("node_x") is None
    assert b.skill.v2.core.audit_log() == []
    await mesh.close()
