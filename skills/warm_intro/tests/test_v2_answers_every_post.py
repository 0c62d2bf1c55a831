"""DESIGN §6 item 6: every v2 node answers, so the requester returns before its deadline
even when a responder cannot evaluate the post (malformed ``psi``, a changed key), as
long as the responder can still seal to it; and stays silent, documented, when it
cannot (no valid key in the post and none pinned)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from darkmesh_warm_intro.sealing import KEY_STATE, open_sealed
from darkmesh_warm_intro.testing import LoopbackMesh, MeshNode, add_demo_node

from .test_v2_flow import ask

#: Far beyond what any answer takes: a requester returning well before it was answered.
LONG_WAIT = 30.0
EARLY = 10.0


async def demo_mesh(tmp_path: Path, wait: float = LONG_WAIT) -> LoopbackMesh:
    mesh = LoopbackMesh(tmp_path)
    for letter in "abc":
        await add_demo_node(mesh, letter, response_wait_seconds=wait)
    return mesh


def tamper_posts_to(mesh: LoopbackMesh, node_id: str,
                    change: Callable[[dict[str, Any]], None]) -> None:
    """Deliver posts to ``node_id`` altered by ``change`` (the others get them intact)."""
    deliver = mesh.deliver_post

    async def tampered(node: MeshNode, post: dict[str, Any]) -> None:
        if node.node_id == node_id:
            post = json.loads(json.dumps(post))
            change(post)
        await deliver(node, post)

    mesh.deliver_post = tampered  # type: ignore[method-assign]


def refusals_to(mesh: LoopbackMesh, recipient: MeshNode, request_id: str) -> list[str]:
    """Reasons of the sealed refusals ``recipient`` received for ``request_id``."""
    keys = recipient.skill.v2.core.keys
    out = []
    for sent in mesh.sent:
        if sent.message.to != recipient.node_id or sent.message.request_id != request_id:
            continue
        opened = open_sealed(keys, sent.raw, recipient=recipient.node_id)
        if opened.kind == "refusal":
            out.append(opened.body["reason"])
    return out


async def timed_ask(node: MeshNode, target: dict[str, Any] | None = None
                    ) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    answer = await (ask(node, target) if target else ask(node))
    return answer, time.monotonic() - started


@pytest.mark.asyncio
async def test_changed_key_is_refused_with_an_answer_not_silence(tmp_path: Path) -> None:
    mesh = await demo_mesh(tmp_path)
    a, b, c = (mesh.nodes[n] for n in ("node_a", "node_b", "node_c"))
    first = await ask(a)
    assert len(first["candidates"]) == 1  # b and c pinned a's key
    # node_a loses its state and comes back with a new key.
    a.host.state("warm_intro").delete(KEY_STATE)
    a.skill.v2.core._keys = None
    answer, elapsed = await timed_ask(a)
    assert elapsed < EARLY, f"waited {elapsed:.1f}s for answers that never came"
    assert answer["state"] == "complete"
    assert answer["answered"] == answer["live_nodes"] == 2 and answer["refused"] == 2
    assert answer["candidates"] == []  # a refusal tells nothing about the target
    assert refusals_to(mesh, a, answer["request_id"]) == ["key_changed", "key_changed"]
    for responder in (b, c):
        pins = responder.skill.v2.core.pins.listing()
        assert [p["node_id"] for p in pins["pending_changes"]] == ["node_a"]
        assert pins["pending_changes"][0]["fingerprint"] == a.skill.v2.core.keys.fingerprint
        assert responder.skill.v2.core.outcomes[-1].reason == "key_changed"
    # Once b's operator accepts the new key, b answers normally again.
    assert b.skill.v2.core.pins.accept("node_a") is not None
    again, _ = await timed_ask(a)
    assert again["refused"] == 1 and [x["score"] for x in again["candidates"]] == [0.904]
    await mesh.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("change", [
    pytest.param(lambda post: post["psi"].update(protocol="ristretto255-psi-v9"),
                 id="unknown-protocol"),
    pytest.param(lambda post: post["psi"].pop("protocol"), id="no-protocol"),
])
async def test_malformed_psi_with_a_key_in_the_post_gets_a_refusal(
    tmp_path: Path, change: Callable[[dict[str, Any]], None]
) -> None:
    mesh = await demo_mesh(tmp_path)
    a, b = mesh.nodes["node_a"], mesh.nodes["node_b"]
    tamper_posts_to(mesh, "node_b", change)
    answer, elapsed = await timed_ask(a)
    assert elapsed < EARLY
    assert answer["answered"] == answer["live_nodes"] == 2 and answer["refused"] == 1
    assert refusals_to(mesh, a, answer["request_id"]) == ["malformed"]
    assert b.skill.v2.core.pins.pinned("node_a") is None  # a refused post pins nothing
    assert b.skill.v2.core.outcomes[-1].reason == "malformed"
    await mesh.close()


@pytest.mark.asyncio
async def test_post_without_a_usable_key_is_refused_to_the_pinned_key(tmp_path: Path) -> None:
    mesh = await demo_mesh(tmp_path)
    a = mesh.nodes["node_a"]
    await ask(a)  # b pins a's key
    tamper_posts_to(mesh, "node_b", lambda post: post["psi"].update(requester_key="!!"))
    answer, elapsed = await timed_ask(a)
    assert elapsed < EARLY
    assert answer["answered"] == 2 and answer["refused"] == 1
    assert refusals_to(mesh, a, answer["request_id"]) == ["malformed"]
    await mesh.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("change", [
    pytest.param(lambda post: post.update(psi="not an object"), id="psi-not-an-object"),
    pytest.param(lambda post: post["psi"].update(
        requester_key=base64.b64encode(b"short").decode()), id="short-key"),
])
async def test_stays_silent_without_any_key_to_seal_to(
    tmp_path: Path, change: Callable[[dict[str, Any]], None]
) -> None:
    # No pin at b and no valid key in the post: nothing can be sealed to the requester, so
    # b sends nothing and the requester's (short) deadline ends the request.
    mesh = await demo_mesh(tmp_path, wait=0.5)
    a, b = mesh.nodes["node_a"], mesh.nodes["node_b"]
    tamper_posts_to(mesh, "node_b", change)
    answer, _ = await timed_ask(a)
    assert answer["state"] == "complete"
    assert answer["live_nodes"] == 2 and answer["answered"] == 1  # only c answered
    await mesh.drain()
    assert not [s for s in mesh.sent if s.message.sender == "node_b"]
    assert b.skill.v2.core.outcomes[-1].reason == "malformed"
    await mesh.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("change", [
    pytest.param(lambda post: post.update(request_id="../x"), id="bad-request-id"),
    pytest.param(lambda post: post.update(requester_id=""), id="no-requester-id"),
])
async def test_stays_silent_without_a_request_or_mailbox_to_answer(
    tmp_path: Path, change: Callable[[dict[str, Any]], None]
) -> None:
    mesh = await demo_mesh(tmp_path, wait=0.5)
    await ask(mesh.nodes["node_a"])  # b has a pin for a: still no usable address
    tamper_posts_to(mesh, "node_b", change)
    sent_before = len([s for s in mesh.sent if s.message.sender == "node_b"])
    answer = await ask(mesh.nodes["node_a"])
    await mesh.drain()
    assert answer["answered"] == 1
    assert len([s for s in mesh.sent if s.message.sender == "node_b"]) == sent_before
    await mesh.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(("protocol", "reason"), [("ristretto255-psi-v2", "send_failed"),
                                                  ("other", "malformed")])
async def test_a_low_order_key_in_the_post_never_raises(tmp_path: Path, protocol: str,
                                                        reason: str) -> None:
    mesh = await demo_mesh(tmp_path, wait=0.5)
    zero_key = base64.b64encode(bytes(32)).decode()
    tamper_posts_to(mesh, "node_b", lambda post: post["psi"].update(
        requester_key=zero_key, protocol=protocol))
    answer = await ask(mesh.nodes["node_a"])
    await mesh.drain()
    assert answer["answered"] == 1
    outcome = mesh.nodes["node_b"].skill.v2.core.outcomes[-1]
    assert not outcome.accepted and outcome.reason == reason
    assert not [s for s in mesh.sent if s.message.sender == "node_b"]
    await mesh.close()
