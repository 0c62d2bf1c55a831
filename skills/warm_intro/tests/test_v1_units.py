"""Small pure pieces of v1: identifiers, answer-value rules, intro clean-up, status."""

from __future__ import annotations

import re

import pytest
from darkmesh_warm_intro.v1 import keys
from darkmesh_warm_intro.v1.requester import _clean_intro, _target_strength
from darkmesh_warm_intro.v1.testing import mesh, mint
from hypothesis import given
from hypothesis import strategies as st


def test_identifiers_have_the_documented_shapes() -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", keys.new_request_id())
    assert re.fullmatch(r"[0-9a-f]{32}", keys.new_response_token())
    assert re.fullmatch(r"[0-9a-f]{32}", keys.new_reveal_token())
    assert re.fullmatch(r"[0-9a-f]{10}", keys.new_consent_id())
    assert len({keys.new_pseudonym() for _ in range(50)}) == 50


@pytest.mark.parametrize(("value", "safe"), [
    ("3f9a0c1d", True), ("a" * 128, True), ("a-b_c.d~e", True),
    ("", False), ("a" * 129, False), ("../x", False), ("a/b", False), ("a b", False),
    ("a%2f", False), ("é", False), (None, False), (12, False),
])
def test_request_ids_must_be_url_path_safe(value: object, safe: bool) -> None:
    assert keys.is_path_safe_request_id(value) is safe


@given(st.text(max_size=30), st.text(max_size=30))
def test_budget_keys_never_collide_across_requesters(a: str, b: str) -> None:
    if a != b:
        assert not keys.budget_key(a, "r").startswith(keys.budget_prefix(b))


@pytest.mark.parametrize(("value", "expected"), [
    (None, 0.5), (0.88, 0.88), (0, 0.0), (1, 1.0), ("0.9", 0.9),
    (1.01, None), (-0.01, None), (float("nan"), None), (float("inf"), None),
    ("high", None), (True, None), ({"v": 1}, None), ([0.5], None),
])
def test_target_strength_rules(value: object, expected: float | None) -> None:
    assert _target_strength(value) == expected


def test_clean_intro_keeps_the_wire_shape_only() -> None:
    raw = {
        "connector": {"node_id": "node_b", "pseudonym_id": "p", "url": "http://x"},
        "target_contact": {"name": "T", "email": "t@x", "org": "X", "role": "BD",
                           "phone": "555", "notes": "secret"},
        "relationship_strength": 0.88, "next_step": "Ask.", "extra": {"huge": "x" * 5000},
    }
    assert _clean_intro(raw) == {
        "connector": {"node_id": "node_b", "pseudonym_id": "p"},
        "target_contact": {"name": "T", "email": "t@x", "org": "X", "role": "BD"},
        "relationship_strength": 0.88, "next_step": "Ask.",
    }
    assert _clean_intro({"connector": {}, "target_contact": "Taylor"}) is None
    assert _clean_intro("intro") is None
    odd = _clean_intro({"connector": {"node_id": 5}, "target_contact": {"name": "x" * 5000},
                        "relationship_strength": 9})
    assert odd is not None
    assert odd["connector"]["node_id"] is None and odd["target_contact"]["name"] is None
    assert odd["relationship_strength"] == 0.0


@pytest.mark.asyncio
async def test_status_counts() -> None:
    async with mesh() as m:
        b = await m.add_node("node_b", warm={"v1_require_approval": True})
        before = b.v1.status()
        assert before["template"] == "warm_intro_v1" and before["enabled"] is True
        assert before["require_approval"] is True
        assert (before["reveal_tokens"], before["sessions"], before["pending_approvals"]) == (
            0, 0, 0)
        await mint(m, b, "r1")
        await mint(m, b, "r2")
        assert b.v1.status()["reveal_tokens"] == 2


@pytest.mark.asyncio
async def test_startup_warnings_name_the_fix() -> None:
    async with mesh() as m:
        lonely = await m.add_node("node_a", data={})
        [warning] = lonely.v1.startup_warnings()
        assert "[[node.peers]]" in warning and "TRUST_MESSAGE_URLS" in warning
        trusting = await m.add_node("node_b", data={}, warm={"v1_trust_message_urls": True})
        [warning] = trusting.v1.startup_warnings()
        assert warning.startswith("warm_intro.v1_trust_message_urls is on")
        paired = await m.add_node("node_c", data={}, peers=["node_a"])
        assert paired.v1.startup_warnings() == []
