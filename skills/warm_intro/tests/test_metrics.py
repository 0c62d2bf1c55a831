"""The skill's counters in ``GET /darkmesh/metrics``: intros by stage and template,
relay posts handled, mailbox messages sent and received (v2 and v1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from darkmesh_warm_intro.testing import LoopbackMesh, MeshNode, add_demo_node
from darkmesh_warm_intro.v1.testing import BASE_REQUEST, PREFIX, mesh
from prometheus_client.parser import text_string_to_metric_families

from .test_v2_flow import ask
from .test_v2_routes import client

V2, V1 = "warm_intro_v2", "warm_intro_v1"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(http: httpx.AsyncClient) -> dict[Any, float]:
    r = await http.get("/darkmesh/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


async def node_metrics(node: MeshNode) -> dict[Any, float]:
    async with client(node) as http:
        return await scrape(http)


def intros(found: dict[Any, float], stage: str, template: str = V2) -> float:
    return value(found, "darkmesh_intros_total", stage=stage, template=template)


def mailbox(found: dict[Any, float], direction: str) -> float:
    return value(found, "darkmesh_mailbox_messages_total", direction=direction)


@pytest.mark.asyncio
async def test_v2_flow_counts_every_stage_on_both_sides(tmp_path: Path) -> None:
    m = LoopbackMesh(tmp_path)
    a, b, c = [await add_demo_node(m, letter) for letter in "abc"]
    revealed = await ask(a)
    declined = await ask(a)
    for answer in (revealed, declined):
        await a.skill.v2.requester.consent(answer["request_id"],
                                           answer["candidates"][0]["consent_id"])
    await m.drain()
    approve, decline = b.skill.v2.responder.pending_approvals()
    await b.skill.v2.responder.decide(approve["approval_id"], True)
    await b.skill.v2.responder.decide(decline["approval_id"], False)
    await m.drain()

    at_a, at_b, at_c = [await node_metrics(n) for n in (a, b, c)]
    assert intros(at_a, "requested") == 2
    assert (intros(at_a, "revealed"), intros(at_a, "declined")) == (1, 1)  # decisions heard
    assert intros(at_a, "answered") == 0
    # a sent two reveal requests; received 2 x 2 replies and the two decisions.
    assert (mailbox(at_a, "sent"), mailbox(at_a, "received")) == (2, 6)
    for responder in (at_b, at_c):
        assert value(responder, "darkmesh_relay_posts_total", template=V2) == 2
        assert intros(responder, "answered") == 2 and intros(responder, "requested") == 0
    assert (intros(at_b, "revealed"), intros(at_b, "declined")) == (1, 1)
    assert (mailbox(at_b, "sent"), mailbox(at_b, "received")) == (4, 2)
    assert (intros(at_c, "revealed"), mailbox(at_c, "sent")) == (0, 2)
    await m.close()


@pytest.mark.asyncio
async def test_v2_refusal_counts_as_answered(tmp_path: Path) -> None:
    m = LoopbackMesh(tmp_path)
    a = await add_demo_node(m, "a")
    b = await add_demo_node(m, "b", budget_requests=1)
    await ask(a)
    answer = await ask(a)
    assert answer["refused"] == 1
    found = await node_metrics(b)
    assert intros(found, "answered") == 2 and mailbox(found, "sent") == 2
    await m.close()


@pytest.mark.asyncio
async def test_v1_flow_counts_requested_answered_revealed() -> None:
    async with mesh() as m:
        a = await m.add_node("node_a", peers=["node_b"], real_skill=True)
        b = await m.add_node("node_b", peers=["node_a"], real_skill=True)
        m.poll(b, b.skill.handle_post)
        async with a.operator(m.router) as http:
            r = await http.post(f"{PREFIX}/request", json=BASE_REQUEST)
            answer = r.json()
            c = await http.post(f"{PREFIX}/consent", json={
                "request_id": answer["request_id"],
                "consent_id": answer["candidates"][0]["consent_id"]})
            assert c.json()["approved"] is True
            at_a = await scrape(http)
        async with b.operator(m.router) as http:
            at_b = await scrape(http)
    assert intros(at_a, "requested", V1) == 1 and intros(at_a, "revealed", V1) == 1
    assert intros(at_a, "requested", V2) == 0
    assert value(at_b, "darkmesh_relay_posts_total", template=V1) == 1
    assert intros(at_b, "answered", V1) == 1 and intros(at_b, "revealed", V1) == 1
    assert mailbox(at_b, "sent") == 0  # v1 answers go over HTTP, not mailboxes


@pytest.mark.asyncio
async def test_v1_declined_reveal_is_counted() -> None:
    async with mesh() as m:
        a = await m.add_node("node_a", peers=["node_b"], real_skill=True)
        b = await m.add_node("node_b", peers=["node_a"], real_skill=True,
                             warm={"v1_require_approval": True})
        m.poll(b, b.skill.handle_post)
        async with a.operator(m.router) as http:
            answer = (await http.post(f"{PREFIX}/request", json=BASE_REQUEST)).json()
            consent = {"request_id": answer["request_id"],
                       "consent_id": answer["candidates"][0]["consent_id"]}
            held = await http.post(f"{PREFIX}/consent", json=consent)
            assert held.status_code == 502 and "approval pending" in held.text
            (approval,) = b.skill.v1.pending_approvals()
            await b.skill.v1.decide(approval["approval_id"], False)
            final = await http.post(f"{PREFIX}/consent", json=consent)
            assert final.json()["approved"] is False
            at_a = await scrape(http)
        async with b.operator(m.router) as http:
            at_b = await scrape(http)
    assert intros(at_a, "declined", V1) == 1 and intros(at_a, "revealed", V1) == 0
    assert intros(at_b, "declined", V1) == 1 and intros(at_b, "revealed", V1) == 0
