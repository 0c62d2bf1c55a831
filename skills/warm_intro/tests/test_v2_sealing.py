"""Sealed, sender-authenticated mailbox messages and key pinning."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from darkmesh_warm_intro.sealing import (
    KeyPins,
    NodeKeys,
    SealError,
    is_v2_envelope,
    open_sealed,
    seal,
)

from sdl_core.state import NodeDatabase, StateArea


def _seal(sender: NodeKeys, recipient: NodeKeys, **extra: object) -> bytes:
    values: dict[str, object] = {"sender": "node_b", "recipient": "node_a",
                                 "recipient_key": recipient.public, "request_id": "r1",
                                 "kind": "psi_reply", "body": {"hello": "world"}}
    values.update(extra)
    return seal(sender, **values)  # type: ignore[arg-type]


def test_round_trip_authenticates_sender() -> None:
    alice, bob = NodeKeys.generate(), NodeKeys.generate()
    opened = open_sealed(alice, _seal(bob, alice), recipient="node_a")
    assert opened.sender == "node_b" and opened.sender_key == bob.public
    assert opened.body == {"hello": "world"} and opened.kind == "psi_reply"


def test_other_recipient_cannot_open() -> None:
    alice, bob, eve = NodeKeys.generate(), NodeKeys.generate(), NodeKeys.generate()
    payload = _seal(bob, alice)
    with pytest.raises(SealError, match="undecryptable"):
        open_sealed(eve, payload.replace(b'"to":"node_a"', b'"to":"node_e"'), recipient="node_e")
    with pytest.raises(SealError, match="misaddressed"):
        open_sealed(eve, payload, recipient="node_e")


@pytest.mark.parametrize("field", ["from", "request_id", "kind"])
def test_header_is_bound_by_the_aead(field: str) -> None:
    alice, bob = NodeKeys.generate(), NodeKeys.generate()
    envelope = json.loads(_seal(bob, alice))
    envelope[field] = {"from": "node_c", "request_id": "r2", "kind": "refusal"}[field]
    with pytest.raises(SealError, match="undecryptable"):
        open_sealed(alice, json.dumps(envelope).encode(), recipient="node_a")


def test_sender_key_swap_is_detected() -> None:
    # Eve re-labels Bob's message with her own static key: the static-static DH differs.
    alice, bob, eve = NodeKeys.generate(), NodeKeys.generate(), NodeKeys.generate()
    envelope = json.loads(_seal(bob, alice))
    envelope["sender_key"] = base64.b64encode(eve.public).decode()
    with pytest.raises(SealError, match="undecryptable"):
        open_sealed(alice, json.dumps(envelope).encode(), recipient="node_a")


def test_malformed_payloads_are_refused_with_a_reason() -> None:
    alice = NodeKeys.generate()
    for payload in (b"not json", b"[]", b'{"v": 2}', b'{"v": 1, "from": "x"}'):
        with pytest.raises(SealError, match="malformed"):
            open_sealed(alice, payload, recipient="node_a")


def test_envelope_sniffing() -> None:
    alice, bob = NodeKeys.generate(), NodeKeys.generate()
    assert is_v2_envelope(base64.b64encode(_seal(bob, alice)).decode())
    assert not is_v2_envelope(base64.b64encode(b'{"other": "skill"}').decode())
    assert not is_v2_envelope("%%%")


def test_keys_persist_and_pins_refuse_changes(tmp_path: Path) -> None:
    area = StateArea(NodeDatabase(tmp_path / "node.db"), "warm_intro")
    first = NodeKeys.load_or_create(area)
    assert NodeKeys.load_or_create(area).public == first.public
    pins = KeyPins(area)
    original, changed = NodeKeys.generate().public, NodeKeys.generate().public
    assert pins.check("node_b", original) is False  # nothing pinned yet, nothing stored
    assert pins.pinned("node_b") is None
    pins.pin("node_b", original)
    pins.pin("node_b", changed)  # a pin is never overwritten by pin()
    assert pins.check("node_b", original) is True
    with pytest.raises(SealError, match="key_changed"):
        pins.check("node_b", changed)
    assert pins.pinned("node_b") == original
    listing = pins.listing()
    assert [c["node_id"] for c in listing["pending_changes"]] == ["node_b"]
    assert pins.accept("node_b") is not None
    assert pins.check("node_b", changed) is True
    assert pins.accept("node_b") is None
