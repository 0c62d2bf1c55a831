"""Protocol v2 end to end in one process: the demo-data outcomes 1-7, consent on both
sides, policies, events and restart durability."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from darkmesh_warm_intro.matching import Target
from darkmesh_warm_intro.models import ConstraintsModel
from darkmesh_warm_intro.testing import LoopbackMesh, MeshNode, add_demo_node, demo_mesh

from sdl_core import INTRO_REVEALED, HTTPProblem, IntroRevealed

BASE_TARGET = {"company": "Company X", "role": "Business Development"}
TAYLOR = {"name": "Taylor BD", "email": "taylor@companyx.com", "org": "Company X",
          "role": "Business Development"}


@pytest_asyncio.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[LoopbackMesh]:
    async with demo_mesh(tmp_path) as mesh:
        yield mesh


async def ask(node: MeshNode, target: dict[str, Any] = BASE_TARGET,
              **constraints: Any) -> dict[str, Any]:
    requester = node.skill.v2.requester
    started = await requester.start(Target.from_json(target), ConstraintsModel(**constraints))
    return await requester.wait(started["request_id"])


async def consent_and_approve(mesh: LoopbackMesh, answer: dict[str, Any]) -> dict[str, Any]:
    a, b = mesh.nodes["node_a"], mesh.nodes["node_b"]
    consent_id = answer["candidates"][0]["consent_id"]
    pending = await a.skill.v2.requester.consent(answer["request_id"], consent_id)
    assert pending["state"] == "pending" and pending["intro"] is None
    await mesh.drain()
    (approval,) = b.skill.v2.responder.pending_approvals()
    assert approval["requester_node_id"] == "node_a"
    await b.skill.v2.responder.decide(approval["approval_id"], True)
    await mesh.drain()
    return await a.skill.v2.requester.consent(answer["request_id"], consent_id)


@pytest.mark.asyncio
async def test_outcome_1_discovery(mesh: LoopbackMesh) -> None:
    answer = await ask(mesh.nodes["node_a"])
    assert answer["state"] == "complete"
    assert answer["answered"] == answer["live_nodes"] == 2  # B and C both answered
    (candidate,) = answer["candidates"]
    assert candidate["score"] == 0.904 and candidate["requires_consent"] is True
    assert candidate["consent_id"] and candidate["state"] == "available"
    flat = repr(answer)
    for secret in ("node_b", "localhost", "@", "casey", "taylor"):
        assert secret not in flat
    assert 0 < answer["privacy_cost"] <= 1


@pytest.mark.asyncio
async def test_outcome_2_consent_pending_then_intro(mesh: LoopbackMesh) -> None:
    answer = await ask(mesh.nodes["node_a"])
    result = await consent_and_approve(mesh, answer)
    assert result["approved"] is True and result["state"] == "revealed"
    intro = result["intro"]
    assert intro["connector"] == {"node_id": "node_b",
                                  "pseudonym_id": answer["candidates"][0]["pseudonym_id"]}
    assert intro["target_contact"] == TAYLOR
    assert intro["relationship_strength"] == 0.88
    assert intro["next_step"] == "Ask connector to forward an intro to the target contact."
    sent_before = len(mesh.sent)
    again = await mesh.nodes["node_a"].skill.v2.requester.consent(
        answer["request_id"], answer["candidates"][0]["consent_id"])
    assert again == result and len(mesh.sent) == sent_before  # no second message to B


@pytest.mark.asyncio
async def test_outcome_3_thresholds(mesh: LoopbackMesh) -> None:
    assert (await ask(mesh.nodes["node_a"], min_strength=0.95))["candidates"] == []
    with pytest.raises(ValueError, match="less than or equal to 10"):
        ConstraintsModel(max_candidates=11)
    with pytest.raises(ValueError, match="less than or equal to 1"):
        ConstraintsModel(min_strength=1.5)


@pytest.mark.asyncio
async def test_outcome_4_matching(mesh: LoopbackMesh) -> None:
    loose = await ask(mesh.nodes["node_a"], {"company": "company x", "role": "business"})
    assert [c["score"] for c in loose["candidates"]] == [0.904]
    tokens_before = {n: len(node.host.state("warm_intro").items("v2:tok:"))
                     for n, node in mesh.nodes.items()}
    none = await ask(mesh.nodes["node_a"], {"company": "Company Z"})
    assert none["candidates"] == [] and none["answered"] == 2
    tokens_after = {n: len(node.host.state("warm_intro").items("v2:tok:"))
                    for n, node in mesh.nodes.items()}
    assert tokens_after == tokens_before  # no responder issued a reveal token


@pytest.mark.asyncio
async def test_outcome_5_empty_target_refused(mesh: LoopbackMesh) -> None:
    published = mesh._seq
    for target in ({}, {"company": None, "role": ""}, {"company": "  "}):
        with pytest.raises(HTTPProblem) as info:
            await ask(mesh.nodes["node_a"], target)
        assert info.value.status == 400 and "company or a role" in str(info.value.detail)
    assert mesh._seq == published


@pytest.mark.asyncio
async def test_outcome_7_no_reveal_without_intersection(tmp_path: Path) -> None:
    mesh = LoopbackMesh(tmp_path)
    await add_demo_node(mesh, "b")
    await add_demo_node(mesh, "c")
    # D knows Blake and Taylor herself, but not Casey (node B).
    d = await mesh.add_node("node_d", contacts=[
        {"name": "Blake", "email": "blake@otherco.com", "org": "OtherCo", "role": "Eng"},
        {"name": "T", "email": "taylor@companyx.com", "org": "Company X", "role": "BD"},
    ], self_identifiers=["dana@fourth.example"])
    answer = await ask(d)
    assert answer["candidates"] == [] and answer["answered"] == 2
    replies = [s for s in d.inbox if s.message.sender == "node_b"]
    assert len(replies) == 1
    # Everything D received from B that it can open contains no contact field of B.
    for outcome in d.skill.v2.core.outcomes:
        assert outcome.accepted
    flat = repr([v for _, v in d.host.state("warm_intro").items("v2:ans:")])
    for field in ("Taylor", "taylor@", "Jordan", "0.88", "p_"):
        assert field not in flat
    await mesh.close()


@pytest.mark.asyncio
async def test_manual_decline_is_final(mesh: LoopbackMesh) -> None:
    a, b = mesh.nodes["node_a"], mesh.nodes["node_b"]
    answer = await ask(a)
    consent_id = answer["candidates"][0]["consent_id"]
    await a.skill.v2.requester.consent(answer["request_id"], consent_id)
    await mesh.drain()
    (approval,) = b.skill.v2.responder.pending_approvals()
    decided = await b.skill.v2.responder.decide(approval["approval_id"], False)
    assert decided == {"approval_id": approval["approval_id"], "state": "declined",
                       "approved": False}
    await mesh.drain()
    result = await a.skill.v2.requester.consent(answer["request_id"], consent_id)
    assert result["state"] == "declined" and result["approved"] is False
    assert result["intro"] is None
    with pytest.raises(HTTPProblem) as info:
        await b.skill.v2.responder.decide(approval["approval_id"], True)
    assert info.value.status == 409
    assert b.skill.v2.core.audit_log() == []


@pytest.mark.asyncio
async def test_auto_policy_and_rules(tmp_path: Path) -> None:
    mesh = LoopbackMesh(tmp_path)
    a = await add_demo_node(mesh, "a")
    await add_demo_node(mesh, "b", approval_policy="auto")
    answer = await ask(a)
    await a.skill.v2.requester.consent(answer["request_id"], answer["candidates"][0]["consent_id"])
    await mesh.drain()
    view = a.skill.v2.requester.view(answer["request_id"])
    assert view["candidates"][0]["state"] == "revealed"
    assert next(iter(view["intros"].values()))["target_contact"] == TAYLOR
    await mesh.close()

    mesh = LoopbackMesh(tmp_path / "deny")
    a = await add_demo_node(mesh, "a")
    await add_demo_node(mesh, "b", approval_policy="auto",
                        requester_rules=[{"node_id": "node_a", "policy": "deny"}])
    answer = await ask(a)
    await a.skill.v2.requester.consent(answer["request_id"], answer["candidates"][0]["consent_id"])
    await mesh.drain()
    assert a.skill.v2.requester.view(answer["request_id"])["candidates"][0]["state"] == "declined"
    await mesh.close()


@pytest.mark.asyncio
async def test_events_once_per_side_and_failing_subscriber(mesh: LoopbackMesh) -> None:
    seen: list[IntroRevealed] = []

    async def record(event: IntroRevealed) -> None:
        seen.append(event)

    async def explode(event: IntroRevealed) -> None:
        raise RuntimeError("subscriber down")

    for node in (mesh.nodes["node_a"], mesh.nodes["node_b"]):
        node.host.events.subscribe(INTRO_REVEALED, "explode", explode)
        node.host.events.subscribe(INTRO_REVEALED, "record", record)
    answer = await ask(mesh.nodes["node_a"])
    result = await consent_and_approve(mesh, answer)
    assert result["approved"] is True
    await mesh.nodes["node_a"].skill.v2.requester.consent(
        answer["request_id"], answer["candidates"][0]["consent_id"])  # cached: no event
    assert sorted(e.side for e in seen) == ["requester", "responder"]
    for event in seen:
        assert event.template == "warm_intro_v2" and event.request_id == answer["request_id"]
        assert event.requester_node_id == "node_a" and event.responder_node_id == "node_b"
        assert event.contact.name == "Taylor BD" and event.relationship_strength == 0.88
        assert event.target.company == "Company X"
    requester_event = next(e for e in seen if e.side == "requester")
    responder_event = next(e for e in seen if e.side == "responder")
    assert requester_event.consent_id == answer["candidates"][0]["consent_id"]
    assert responder_event.consent_id is None
    assert requester_event.revealed_at == responder_event.revealed_at
    assert "email" not in requester_event.model_dump()["contact"]
    log_a = mesh.nodes["node_a"].skill.v2.core.audit_log()
    log_b = mesh.nodes["node_b"].skill.v2.core.audit_log()
    assert [e["side"] for e in log_a] == ["requester"]
    assert [e["side"] for e in log_b] == ["responder"]


async def restart(mesh: LoopbackMesh, letter: str, **warm_intro: Any) -> MeshNode:
    await mesh.drain()
    await mesh.nodes[f"node_{letter}"].host.stop()
    return await add_demo_node(mesh, letter, **warm_intro)


@pytest.mark.asyncio
async def test_restart_between_every_step(mesh: LoopbackMesh) -> None:
    answer = await ask(mesh.nodes["node_a"])
    key_a = mesh.nodes["node_a"].skill.v2.core.keys.public
    a = await restart(mesh, "a")
    assert a.skill.v2.core.keys.public == key_a  # long-term key survives
    consent_id = answer["candidates"][0]["consent_id"]
    assert a.skill.v2.requester.view(answer["request_id"])["candidates"][0]["state"] == "available"
    await a.skill.v2.requester.consent(answer["request_id"], consent_id)
    await mesh.drain()
    b = await restart(mesh, "b")
    (approval,) = b.skill.v2.responder.pending_approvals()
    a = await restart(mesh, "a")
    await b.skill.v2.responder.decide(approval["approval_id"], True)
    await mesh.drain()
    a = await restart(mesh, "a")
    result = await a.skill.v2.requester.consent(answer["request_id"], consent_id)
    assert result["state"] == "revealed" and result["intro"]["target_contact"] == TAYLOR


@pytest.mark.asyncio
async def test_requester_restart_while_collecting(tmp_path: Path) -> None:
    mesh = LoopbackMesh(tmp_path)
    a = await add_demo_node(mesh, "a")
    b = await add_demo_node(mesh, "b")
    held: list[dict[str, Any]] = []
    answer_post = b.skill.v2.handle_post

    async def hold(post: dict[str, Any]) -> None:
        held.append(post)

    b.skill.v2.handle_post = hold  # type: ignore[method-assign]
    started = await a.skill.v2.requester.start(Target.from_json(BASE_TARGET), ConstraintsModel())
    await mesh.drain()
    a = await restart(mesh, "a")  # B answers only after A restarted
    await answer_post(held[0])
    await mesh.drain()
    view = a.skill.v2.requester.view(started["request_id"])
    assert view["state"] == "complete" and [c["score"] for c in view["candidates"]] == [0.904]
    await mesh.close()


@pytest.mark.asyncio
async def test_deadline_when_a_live_node_is_silent(tmp_path: Path) -> None:
    mesh = LoopbackMesh(tmp_path)
    a = await add_demo_node(mesh, "a", response_wait_seconds=0.5)
    await add_demo_node(mesh, "b")
    c = await add_demo_node(mesh, "c")
    c.skill.v2.handle_post = _silent  # type: ignore[method-assign]
    answer = await ask(a)
    assert answer["live_nodes"] == 2 and answer["answered"] == 1
    assert [x["score"] for x in answer["candidates"]] == [0.904]
    await mesh.close()


async def _silent(post: dict[str, Any]) -> None:
    return None
