"""Mapping, strength and paging (``neotoma.md`` §2.3, §3.1–3.2)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from conftest import FakeClock
from darkmesh_neotoma.client import NeotomaClient, NeotomaError
from darkmesh_neotoma.mapping import (
    Signals,
    dataset_record,
    map_entities,
    map_entity,
    parse_timestamp,
    strength,
)
from darkmesh_neotoma.settings import NeotomaSettings
from hypothesis import given
from hypothesis import strategies as st
from standin import StandinServer

NOW = 1_800_000_000.0
DAY = 86400.0


def settings(url: str, **extra: Any) -> NeotomaSettings:
    return NeotomaSettings(url=url, **extra)


# -------------------------------------------------------------------- strength


def test_worked_example_is_0_761() -> None:
    entity = {"entity_id": "ent_1", "name": "A", "observation_count": 8,
              "relationship_count": 6, "last_observation_at": NOW}
    contact = map_entity(entity, now=NOW)
    assert contact is not None and contact.strength == 0.761


def test_real_shape_one_observation_45_days_is_0_182() -> None:
    iso_45_days = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(NOW - 45 * DAY))
    entity = {"entity_id": "ent_1", "snapshot": {"name": "B"}, "observation_count": 1,
              "last_observation_at": iso_45_days}
    contact = map_entity(entity, now=NOW)
    assert contact is not None and contact.strength == 0.182


def test_no_signals_is_zero() -> None:
    contact = map_entity({"entity_id": "ent_1", "name": "C", "strength": 0.9}, now=NOW)
    assert contact is not None and contact.strength == 0.0  # an entity strength is ignored


def test_future_timestamps_floor_age_at_zero() -> None:
    assert strength(Signals(observation_count=0, relationship_count=0,
                            last_observation=NOW + 5 * DAY), NOW) == pytest.approx(0.35)


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.floats(0, 10_000))
def test_strength_is_bounded_and_monotone(obs: int, rels: int, age_days: float) -> None:
    signals = Signals(observation_count=obs, relationship_count=rels,
                      last_observation=NOW - age_days * DAY)
    value = strength(signals, NOW)
    assert 0.0 <= value <= 1.0
    more = Signals(observation_count=obs + 1, relationship_count=rels,
                   last_observation=signals.last_observation)
    assert strength(more, NOW) >= value


@pytest.mark.parametrize("value, expected", [
    (NOW, NOW), (NOW * 1000, NOW), (str(int(NOW)), NOW),
    ("2027-01-15T08:00:00Z", 1800000000.0), ("2027-01-15T08:00:00", 1800000000.0),
    ("2027-01-15T09:00:00+01:00", 1800000000.0), ("yesterday", None), (None, None),
    (True, None), ("", None),
])
def test_timestamp_formats(value: Any, expected: float | None) -> None:
    parsed = parse_timestamp(value)
    assert parsed == (pytest.approx(expected) if expected is not None else None)


# --------------------------------------------------------------------- aliases


@pytest.mark.parametrize("field, value, attribute, expected", [
    ("full_name", "Full", "name", "Full"),
    ("display_name", "Disp", "name", "Disp"),
    ("canonical_name", "contact:x@y.z", "name", "contact:x@y.z"),
    ("primary_email", "P@Y.Z", "email", "p@y.z"),
    ("work_email", "w@y.z", "email", "w@y.z"),
    ("company", "Co", "org", "Co"),
    ("organization", "Org", "org", "Org"),
    ("current_company", "Cur", "org", "Cur"),
    ("employer", "Emp", "org", "Emp"),
    ("title", "Title", "role", "Title"),
    ("job_title", "Job", "role", "Job"),
])
def test_alias_lists(field: str, value: str, attribute: str, expected: str) -> None:
    contact = map_entity({"id": "ent_9", field: value}, now=NOW)
    assert contact is not None and getattr(contact, attribute) == expected
    assert contact.neotoma_entity_id == "ent_9"


def test_order_overlay_and_fallbacks() -> None:
    entity = {"entity_id": "ent_1", "canonical_name": "contact:t@x.com", "name": "Top",
              "snapshot": {"name": "Snap", "email": " T@X.com ", "role": "R", "title": "T"}}
    contact = map_entity(entity, now=NOW)
    assert contact is not None
    assert (contact.name, contact.email, contact.role) == ("Snap", "t@x.com", "R")
    only_canonical = map_entity({"entity_id": "e", "canonical_name": "Canon"}, now=NOW)
    assert only_canonical is not None and only_canonical.name == "Canon"
    by_email = map_entity({"entity_id": "e", "email": "a@b.c"}, now=NOW)
    assert by_email is not None and by_email.name == "a@b.c"
    by_id = map_entity({"entity_id": "ent_77"}, now=NOW)
    assert by_id is not None and by_id.name == "ent_77"
    assert by_id.interaction() is None
    assert by_email.interaction() == {"email": "a@b.c", "strength": 0.0}


def test_skips_merged_idless_and_own_identifiers() -> None:
    entities = [
        {"entity_id": "a", "email": "me@home.org"},
        {"entity_id": "b", "merged_to_entity_id": "c", "email": "x@y.z"},
        {"name": "no id"},
        {"entity_id": "d", "email": "friend@x.com", "observations": [{}, {}]},
        "not an object",
    ]
    contacts, skipped = map_entities(entities, now=NOW,  # type: ignore[arg-type]
                                     self_identifiers=["ME@home.org"])
    assert [c.email for c in contacts] == ["friend@x.com"]
    assert skipped == 4
    assert contacts[0].strength == round(0.45 * (1 - 2.718281828 ** (-2 / 8)), 3)


def test_dataset_record_keeps_snapshot_fields() -> None:
    record = dataset_record({"entity_id": "ent_w", "snapshot": {"writer": "w1", "tier": 2}})
    assert record == {"writer": "w1", "tier": 2, "neotoma_entity_id": "ent_w"}
    assert dataset_record({"entity_id": "x", "merged_to_entity_id": "y"}) is None


# ----------------------------------------------------------- through real HTTP


def store(server: StandinServer, key: str, *entities: dict[str, Any]) -> None:
    response = httpx.post(server.url + "/store",
                          json={"idempotency_key": key, "entities": list(entities)})
    assert response.status_code == 200, response.text


@pytest.mark.asyncio
async def test_0_182_case_from_the_standin(standin: StandinServer, clock: FakeClock) -> None:
    clock.advance(-45 * DAY)
    store(standin, "old", {"entity_type": "contact", "name": "Old Friend",
                           "email": "old@x.com"})
    clock.advance(45 * DAY)
    client = NeotomaClient(settings(standin.url), signer=None)
    listing = await client.list_entities("contact")
    await client.aclose()
    contacts, _ = map_entities(listing.entities, now=time.time())
    assert [(c.email, c.strength) for c in contacts] == [("old@x.com", 0.182)]


@pytest.mark.asyncio
async def test_paging_follows_next_cursor_and_caps(standin: StandinServer) -> None:
    store(standin, "many", *[{"entity_type": "contact", "name": f"P{i}", "email": f"p{i}@x.com"}
                             for i in range(7)])
    client = NeotomaClient(settings(standin.url, page_size=3), signer=None)
    listing = await client.list_entities("contact")
    assert len(listing.entities) == 7 and listing.pages == 3 and listing.stopped == "end"
    capped = await client.list_entities("contact", cap=4)
    assert len(capped.entities) == 4 and capped.stopped == "cap"
    await client.aclose()
    bodies = [json.loads(r["body"]) for r in standin.neotoma.requests
              if r["path"] == "/entities/query"]
    assert bodies[0] == {"entity_type": "contact", "limit": 3, "include_snapshots": True}
    assert "cursor" in bodies[1] and "offset" not in bodies[1]
    assert bodies[-1]["limit"] == 1  # the last capped page asks only for what is left


def mock_client(handler: Any, **extra: Any) -> NeotomaClient:
    return NeotomaClient(settings("http://neotoma.test", **extra), signer=None,
                         transport=httpx.MockTransport(handler))


def entities(start: int, count: int) -> list[dict[str, Any]]:
    return [{"entity_id": f"ent_{i:05d}", "name": f"N{i}"} for i in range(start, start + count)]


@pytest.mark.asyncio
async def test_full_page_without_cursor_falls_back_to_offset_never_past_2000() -> None:
    offsets: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        offsets.append(body.get("offset", 0))
        return httpx.Response(200, json={"results": entities(body.get("offset", 0), 500)})

    client = mock_client(handler)
    listing = await client.list_entities("contact", cap=10_000)
    assert offsets == [0, 500, 1000, 1500, 2000]
    assert listing.stopped == "offset_limit" and len(listing.entities) == 2500


@pytest.mark.asyncio
async def test_repeated_cursor_and_empty_page_stop() -> None:
    calls = 0

    def looping(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, json={"entities": entities(calls, 1), "next_cursor": "same"})

    listing = await mock_client(looping).list_entities("contact")
    assert listing.stopped == "repeated_cursor" and calls == 2

    def empty(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"entities": [], "next_cursor": "c1"})

    assert (await mock_client(empty).list_entities("contact")).stopped == "empty"


@pytest.mark.asyncio
async def test_http_errors_carry_the_body() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error_code": "VALIDATION_INVALID_FORMAT"})

    with pytest.raises(NeotomaError) as info:
        await mock_client(refuse).list_entities("contact")
    assert info.value.status == 400 and "VALIDATION_INVALID_FORMAT" in info.value.body

    def shapeless(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"rows": []})

    with pytest.raises(NeotomaError):
        await mock_client(shapeless).list_entities("contact")
