from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdl_core.connectors.openclaw_events import (
    DEFAULT_CHANNEL_WEIGHTS,
    channel_of,
    extract_records,
    interactions_of,
    normalise_identifier,
    parse_event_text,
    parse_people_rows,
    parse_weight_overrides,
    score_contacts,
    timestamp_of,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _messages(now: datetime) -> list[dict[str, object]]:
    inbound: list[dict[str, object]] = [
        {"channel": "gmail", "from": "c1@example.com", "to": "me@example.org",
         "timestamp": now.isoformat()} for _ in range(10)]
    outbound: list[dict[str, object]] = [
        {"channel": "gmail", "from": "me@example.org", "to": ["c1@example.com"],
         "timestamp": now.isoformat()} for _ in range(10)]
    return inbound + outbound


def test_worked_example_with_self_identifier_is_0_925() -> None:
    result = score_contacts(_messages(NOW), self_identifiers=["me@example.org"], now=NOW)
    assert result.contacts == [{"name": "c1@example.com", "email": "c1@example.com",
                                "org": "", "role": "", "strength": 0.925}]
    assert result.interactions == [{"email": "c1@example.com", "strength": 0.925}]


def test_worked_example_without_self_identifier_is_0_425_for_both() -> None:
    result = score_contacts(_messages(NOW), now=NOW)
    by_email = {c["email"]: c["strength"] for c in result.contacts}
    assert by_email == {"c1@example.com": 0.425, "me@example.org": 0.425}


def test_recency_decays_with_45_day_e_folding() -> None:
    old = NOW - timedelta(days=45)
    events = [{"channel": "sms", "counterparty": "+1 555 123 4567", "direction": "inbound",
               "timestamp": old.isoformat()}]
    (contact,) = score_contacts(events, now=NOW, min_strength=0).contacts
    expected = 0.40 * (0.9 / 20) + 0.20 * 0.36787944 + 0.10 * 0.25
    assert contact["email"] == "phone:+15551234567"
    assert contact["strength"] == round(expected, 3)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("+1 (555) 123-4567", "phone:+15551234567"), ("Someone@Example.COM", "someone@example.com"),
     ("id:ABC", "id:abc"), ("U123", ""), ("slack:U12345678", "slack:u12345678"),
     ("phone:", ""), ("id:  ", ""), (None, "")],
)
def test_identifier_rules(raw: object, expected: str) -> None:
    assert normalise_identifier(raw) == expected


@pytest.mark.parametrize(
    ("event", "channel"),
    [({"channel": "Gmail"}, "gmail"), ({"provider": "whatsapp_call"}, "whatsapp"),
     ({"source": "context"}, "sms"), ({"type": "zoom meeting"}, "calendar"),
     ({"channel": "discord"}, "discord"), ({}, "unknown"), ({"integration": "phone"}, "phone")],
)
def test_channel_mapping_order(event: dict[str, object], channel: str) -> None:
    assert channel_of(event) == channel


def test_numeric_and_digit_string_timestamps_are_epochs() -> None:
    assert timestamp_of({"ts": 1_700_000_000}) == datetime.fromtimestamp(1_700_000_000, UTC)
    assert timestamp_of({"ts": 1_700_000_000_000}) == datetime.fromtimestamp(1_700_000_000,
                                                                             UTC)
    assert timestamp_of({"ts": "1700000000"}) == datetime.fromtimestamp(1_700_000_000, UTC)
    assert timestamp_of({"date": "2026-11-30"}) == datetime(2026, 11, 30, tzinfo=UTC)
    assert timestamp_of({"date": "not a date"}) is None


def test_extraction_and_ndjson() -> None:
    assert extract_records({"data": {"messages": [{"a": 1}, 3]}}) == [{"a": 1}]
    assert extract_records({"x": 1}) == [{"x": 1}]
    assert extract_records([1, {"b": 2}]) == [{"b": 2}]
    assert parse_event_text('{"a": 1}\n{"b": 2}\nnot json\n') == [{"a": 1}, {"b": 2}]
    # A pretty-printed document is read whole, not as NDJSON lines (§13).
    assert parse_event_text('{"events": [\n{"a": 1},\n{"b": 2}\n]}') == [{"a": 1}, {"b": 2}]
    with pytest.raises(ValueError):
        parse_event_text("[not json")


def test_outbound_recipients_counted_per_listing_and_unknown_dedupes() -> None:
    self_ids = frozenset({"me@x.org"})
    out = interactions_of({"from": "me@x.org", "to": ["a@x.org"], "cc": ["a@x.org"]}, self_ids)
    assert [i.identifier for i in out] == ["a@x.org", "a@x.org"]
    unknown = interactions_of({"to": ["a@x.org", "a@x.org", "me@x.org"]}, self_ids)
    assert [(i.identifier, i.direction) for i in unknown] == [("a@x.org", "unknown")]


def test_enrichment_weights_filter_and_cap() -> None:
    people = parse_people_rows([{"email": "C1@example.com", "name": "Casey", "company": "X"},
                                {"identifier": "", "name": "nobody"}])
    events = [{"counterparty": "c1@example.com", "channel": "slack", "org": "Observed Org",
               "timestamp": NOW.isoformat(), "direction": "inbound"},
              {"counterparty": "c2@example.com", "channel": "slack",
               "timestamp": (NOW - timedelta(days=400)).isoformat()}]
    weights = parse_weight_overrides(["slack=2", "bad", "=3", "sms=abc", "Phone=-1"])
    assert weights["slack"] == 2.0 and weights["phone"] == 0.0 and weights["sms"] == 0.9
    result = score_contacts(events, weights=weights, people=people, now=NOW, min_strength=0.05,
                            max_contacts=1)
    assert [c["email"] for c in result.contacts] == ["c1@example.com"]
    assert result.contacts[0]["name"] == "Casey" and result.contacts[0]["org"] == "X"


@given(st.lists(st.fixed_dictionaries({
    "channel": st.sampled_from([*DEFAULT_CHANNEL_WEIGHTS, "weird"]),
    "counterparty": st.emails(),
    "direction": st.sampled_from(["inbound", "outbound", "sideways"]),
}), max_size=40))
def test_strengths_always_in_unit_interval_and_sorted(events: list[dict[str, object]]) -> None:
    result = score_contacts(events, now=NOW, min_strength=0)
    strengths = [c["strength"] for c in result.contacts]
    assert all(0.0 <= s <= 1.0 for s in strengths)
    assert strengths == sorted(strengths, reverse=True)
    assert len(result.contacts) == len(result.interactions)
