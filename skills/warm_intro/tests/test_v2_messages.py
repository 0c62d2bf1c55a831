"""The v2 wire models (``darkmesh_warm_intro.v2.messages``) describe what a real flow
sends: every post, envelope and sealed body validates against its model."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from darkmesh_warm_intro.sealing import open_sealed
from darkmesh_warm_intro.testing import LoopbackMesh, add_demo_node
from darkmesh_warm_intro.v2 import exchange, messages
from pydantic import ValidationError

from .test_v2_flow import ask, consent_and_approve


@pytest.mark.asyncio
async def test_every_message_of_a_flow_matches_its_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payloads: list[dict[str, Any]] = []
    build = exchange.build_reply

    def recording(**kwargs: Any) -> exchange.Reply:
        payloads.append(kwargs["payload"])
        return build(**kwargs)

    monkeypatch.setattr(exchange, "build_reply", recording)
    mesh = LoopbackMesh(tmp_path)
    a = await add_demo_node(mesh, "a")
    await add_demo_node(mesh, "b")
    await add_demo_node(mesh, "c", budget_requests=1)
    assert (await ask(a, {"company": "Company Z"}))["candidates"] == []  # nobody matches
    await consent_and_approve(mesh, await ask(a))  # c refuses this one: over its budget
    await mesh.drain()

    kinds: Counter[str] = Counter()
    for sent in mesh.sent:
        envelope = messages.V2Envelope.model_validate(json.loads(sent.raw))
        assert envelope.sender == sent.message.sender and envelope.to == sent.message.to
        recipient = mesh.nodes[sent.message.to].skill.v2.core.keys
        opened = open_sealed(recipient, sent.raw, recipient=sent.message.to)
        messages.BODY_MODELS[opened.kind].model_validate(opened.body)
        kinds[opened.kind] += 1
    assert kinds == {"psi_reply": 3, "refusal": 1, "reveal_request": 1, "reveal_response": 1}
    for node in mesh.nodes.values():
        for post in node.posts_seen:
            messages.V2Post.model_validate(post)
    matched = [messages.V2MatchPayload.model_validate(p) for p in payloads]
    assert sorted(p.match for p in matched) == [False, False, True]
    (hit,) = [p for p in matched if p.match]
    assert hit.reveal_token and hit.pseudonym_id and hit.target_strength == 0.88
    await mesh.close()


@pytest.mark.parametrize(("model", "body"), [
    (messages.V2RevealResponse, {"state": "maybe"}),
    (messages.V2RevealRequest, {"reveal_token": "", "target": {}}),
    (messages.V2MatchPayload, {"match": True, "target_strength": 1.5}),
    (messages.V2Envelope, {"v": 2}),
    (messages.V2PsiReply, {"protocol": "dh-psi-v1", "y": "", "entries": "", "payload": "",
                           "budget": {"used": 0, "limit": 1, "window_seconds": 1}}),
])
def test_models_refuse_what_receivers_refuse(model: Any, body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(body)


def test_skill_exposes_the_models_for_contracts(tmp_path: Path) -> None:
    from darkmesh_warm_intro import plugin

    from sdl_core.testing.host import make_host

    host = make_host(plugin, node_id="node_m", data_dir=str(tmp_path), store="memory")
    host.prepare()
    exposed = host.skills["warm-intro"].wire_models()
    assert set(exposed) == {messages.V2Post, messages.V2Envelope, messages.V2MatchPayload,
                            *messages.BODY_MODELS.values()}
    envelope = messages.V2Envelope.model_json_schema(mode="validation")
    assert "from" in envelope["properties"] and "sender" not in envelope["properties"]
