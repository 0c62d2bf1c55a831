"""Writeback (Phase 2): fields, idempotency, outbox across outages and restarts."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import HAVE_AAUTH, FakeClock, node_host, running, started
from darkmesh_neotoma.writeback import (
    classify,
    idempotency_key,
    reveal_body,
    reveal_entity,
)
from neotoma_testsigner import TestSigner
from standin import StandinServer

from sdl_core import INTRO_REVEALED, Host, IntroRevealed

REQUESTER = IntroRevealed(
    node_id="node_a", side="requester", template="warm_intro_v1", request_id="3f9c2a1b",
    consent_id="7e1d0c9a4b", requester_node_id="node_a", responder_node_id="node_b",
    target={"company": "Company X", "role": "Business Development"},
    contact={"name": "Taylor BD", "org": "Company X", "role": "Business Development"},
    relationship_strength=0.88, revealed_at="2026-11-29T01:21:33.432000+00:00",
)
RESPONDER = REQUESTER.model_copy(update={
    "node_id": "node_b", "side": "responder", "consent_id": None,
    "contact": REQUESTER.contact.model_copy(update={"role": None}),
})


def responder_event(request_id: str = "3f9c2a1b") -> IntroRevealed:
    return RESPONDER.model_copy(update={"request_id": request_id})


# ------------------------------------------------------------------------ body


def test_requester_body_is_the_spec_example() -> None:
    body = json.loads(reveal_body(REQUESTER))
    assert list(body) == ["idempotency_key", "source_priority", "entities"]
    assert body["idempotency_key"] == "warm_intro_reveal-8d10fa9659322f7b2a552e9170f4aceb"
    assert body["source_priority"] == 90
    assert body["entities"] == [{
        "entity_type": "warm_intro_reveal",
        "canonical_name": "warm_intro_reveal:node_a:3f9c2a1b:7e1d0c9a4b:requester",
        "request_id": "3f9c2a1b", "consent_id": "7e1d0c9a4b", "requester_node_id": "node_a",
        "responder_node_id": "node_b", "darkmesh_node_id": "node_a", "side": "requester",
        "template": "warm_intro_v1", "approved": True, "relationship_strength": 0.88,
        "target_org": "Company X", "target_role": "Business Development",
        "target_contact_name": "Taylor BD", "target_contact_org": "Company X",
        "target_contact_role": "Business Development",
        "revealed_at": "2026-11-29T01:21:33.432000+00:00",
        "data_source": "darkmesh-node:node_a",
    }]


def test_responder_body_drops_nulls_and_has_no_consent() -> None:
    entity = reveal_entity(RESPONDER)
    assert entity["canonical_name"] == "warm_intro_reveal:node_b:3f9c2a1b:_:responder"
    assert "consent_id" not in entity and "target_contact_role" not in entity
    assert None not in entity.values()
    assert "email" not in json.dumps(entity)
    assert idempotency_key(RESPONDER) != idempotency_key(REQUESTER)
    assert reveal_body(RESPONDER) == reveal_body(RESPONDER)  # byte-identical replays


@pytest.mark.parametrize("status, body, verdict", [
    (200, {"success": True, "replayed": True}, "done"),
    (400, {"error": {"code": "ERR_IDEMPOTENCY_MISMATCH", "message": "x"}}, "conflict"),
    (409, {"error_code": "ERR_IDEMPOTENCY_COLLISION"}, "conflict"),
    (400, {"error_code": "ERR_UNKNOWN_FIELD"}, "bug"),
    (500, {"error_code": "DB_QUERY_FAILED", "message": 'Agent "L" is not permitted to store '
           'entity_type "warm_intro_reveal".'}, "capability_denied"),
    (500, {"error_code": "DB_QUERY_FAILED", "message": 'Access policy "closed" for entity_type '
           '"warm_intro_reveal" denies "store" for guest callers.'}, "not_admitted"),
    (401, {"error_code": "AUTH_REQUIRED"}, "auth"),
    (500, {"error_code": "INTERNAL"}, "retry"),
    (503, {}, "retry"),
    (429, {}, "retry"),
])
def test_answers_are_classified(status: int, body: Any, verdict: str) -> None:
    assert classify(status, json.dumps(body)) == verdict


# -------------------------------------------------------------- against Neotoma


def grant_writer(server: StandinServer, host: Host, clock: FakeClock,
                 capabilities: list[dict[str, Any]] | None = None) -> None:
    assert host.signer is not None
    response = httpx.post(server.url + "/agents/grants", json={
        "label": "Darkmesh node", "match_thumbprint": host.signer.identity("node").thumbprint,
        "capabilities": capabilities or [{"op": "store_structured",
                                          "entity_types": ["warm_intro_reveal"]}]})
    assert response.status_code == 201
    clock.advance(6)  # past Neotoma's admission cache


def store_requests(server: StandinServer) -> list[dict[str, Any]]:
    return [r for r in server.neotoma.requests if r["path"] == "/store"]


def reveals(server: StandinServer) -> list[Any]:
    return [e for e in server.neotoma.entities.entities.values()
            if e.entity_type == "warm_intro_reveal"]


def same_signer_options() -> dict[str, Any]:
    """node_host options giving two hosts the same node key (a restart)."""
    if HAVE_AAUTH:
        from darkmesh_aauth.keys import generate_jwk

        return {"node_jwk": generate_jwk("Ed25519")}
    return {"test_signer": TestSigner(sub="darkmesh-node@node_a")}


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_signed_write_with_spec_fields_and_consenting_twice_writes_once(
    standin: StandinServer, tmp_path: Path, clock: FakeClock
) -> None:
    async with running(node_host(tmp_path, standin.url, node_id="node_a")) as host:
        grant_writer(standin, host, clock)
        await host.events.emit(INTRO_REVEALED, REQUESTER)
        await host.events.emit(INTRO_REVEALED, REQUESTER)
        [sent] = store_requests(standin)
        assert sent["body"] == reveal_body(REQUESTER)
        assert "authorization" not in sent["headers"]
        assert "signature" in sent["headers"]
        assert "expires" not in sent["headers"]["signature-input"]
        [entity] = reveals(standin)
        snapshot, _, _ = entity.reduce()
        assert snapshot["canonical_name"] == (
            "warm_intro_reveal:node_a:3f9c2a1b:7e1d0c9a4b:requester")
        assert snapshot["approved"] is True and len(entity.observations) == 1
        assert (await host.plugin_status())["neotoma"]["writeback"]["written"] == 1


@pytest.mark.asyncio
async def test_both_sides_on_one_neotoma_stay_two_records(
    standin: StandinServer, tmp_path: Path, clock: FakeClock
) -> None:
    async with running(node_host(tmp_path, standin.url, node_id="node_b")) as host:
        grant_writer(standin, host, clock)
        await host.events.emit(INTRO_REVEALED, responder_event("aaaa1111"))
        await host.events.emit(INTRO_REVEALED, responder_event("bbbb2222"))
        assert len(reveals(standin)) == 2  # canonical_name keeps them apart


@pytest.mark.asyncio
async def test_outage_keeps_the_record_and_retries_the_identical_body(
    standin: StandinServer, tmp_path: Path, clock: FakeClock
) -> None:
    async with running(node_host(tmp_path, standin.url, node_id="node_a")) as host:
        grant_writer(standin, host, clock)
        standin.neotoma.fail_with = 503
        await host.events.emit(INTRO_REVEALED, REQUESTER)
        status = (await host.plugin_status())["neotoma"]["writeback"]
        assert status["outbox_depth"] == 1 and "503" in status["last_error"]
        await wait_for(lambda: len(store_requests(standin)) >= 2)  # backoff retry
        standin.neotoma.fail_with = None
        await wait_for(lambda: len(reveals(standin)) == 1)
        bodies = {r["body"] for r in store_requests(standin)}
        assert bodies == {reveal_body(REQUESTER)}
        await wait_for(lambda: host.store.runtime.writeback.outbox.depth() == 0)  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_outbox_survives_neotoma_down_and_a_node_restart(
    standin: StandinServer, tmp_path: Path, clock: FakeClock
) -> None:
    same_key = same_signer_options()
    first = await started(node_host(tmp_path, standin.url, node_id="node_a", **same_key))
    grant_writer(standin, first, clock)
    standin.stop()
    await first.events.emit(INTRO_REVEALED, REQUESTER)
    assert (await first.plugin_status())["neotoma"]["writeback"]["outbox_depth"] == 1
    await first.stop()

    standin.start()
    second = await started(node_host(tmp_path, standin.url, node_id="node_a", **same_key))
    try:
        await wait_for(lambda: len(reveals(standin)) == 1)
        assert [r["body"] for r in store_requests(standin)] == [reveal_body(REQUESTER)]
    finally:
        await second.stop()


@pytest.mark.asyncio
async def test_capability_denial_is_parked_not_retried(
    standin: StandinServer, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="darkmesh.neotoma")
    async with running(node_host(tmp_path, standin.url, node_id="node_a")) as host:
        grant_writer(standin, host, clock, capabilities=[{"op": "retrieve",
                                                          "entity_types": ["contact"]}])
        await host.events.emit(INTRO_REVEALED, REQUESTER)
        await asyncio.sleep(0.5)
        assert len(store_requests(standin)) == 1
        status = (await host.plugin_status())["neotoma"]["writeback"]
        assert status["outbox_depth"] == 0 and status["parked"] == 1
        assert any("capability_denied" in r.message and "grants provision" in r.message
                   for r in caplog.records)


@pytest.mark.asyncio
async def test_unadmitted_signer_is_not_admitted(
    standin: StandinServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="darkmesh.neotoma")
    async with running(node_host(tmp_path, standin.url, node_id="node_a")) as host:
        await host.events.emit(INTRO_REVEALED, REQUESTER)
        assert len(store_requests(standin)) == 1 and reveals(standin) == []
        assert any("not_admitted" in r.message for r in caplog.records)


@pytest.mark.asyncio
async def test_responder_collision_is_a_conflict_not_retried(
    standin: StandinServer, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="darkmesh.neotoma")
    async with running(node_host(tmp_path, standin.url, node_id="node_b")) as host:
        grant_writer(standin, host, clock)
        await host.events.emit(INTRO_REVEALED, RESPONDER)
        other_requester = RESPONDER.model_copy(update={"requester_node_id": "node_c"})
        await host.events.emit(INTRO_REVEALED, other_requester)  # same tuple, other content
        await asyncio.sleep(0.3)
        assert len(store_requests(standin)) == 1  # the first one settled the key as done
        assert len(reveals(standin)) == 1
        host.store.runtime.writeback.outbox.state.delete(  # type: ignore[attr-defined]
            "done:" + idempotency_key(RESPONDER))
        await host.events.emit(INTRO_REVEALED, other_requester)
        assert len(store_requests(standin)) == 2
        assert any("other content" in r.message for r in caplog.records)
        assert (await host.plugin_status())["neotoma"]["writeback"]["outbox_depth"] == 0


@pytest.mark.asyncio
async def test_without_a_signer_writeback_is_off_with_one_log_line(
    standin: StandinServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="darkmesh.neotoma")
    async with running(node_host(tmp_path, standin.url, signer=None)) as host:
        await host.events.emit(INTRO_REVEALED, REQUESTER)
        await host.events.emit(INTRO_REVEALED, RESPONDER)
        assert store_requests(standin) == []
        lines = [r.message for r in caplog.records if "writeback is off" in r.message]
        assert len(lines) == 1 and "no signer" in lines[0]
        assert (await host.plugin_status())["neotoma"]["writeback"]["enabled"] is False


@pytest.mark.asyncio
async def test_a_hanging_neotoma_never_delays_the_reveal_beyond_the_budget(
    tmp_path: Path
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections, never answers
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    host = node_host(tmp_path, url, node_id="node_a", event_budget_seconds=0.5,
                     neotoma={"authority": "localhost:1", "probe_timeout_seconds": 0.3})
    try:
        await started(host)
        began = time.monotonic()
        await host.events.emit(INTRO_REVEALED, REQUESTER)
        elapsed = time.monotonic() - began
        assert elapsed < 5  # the 0.5 s event budget, not the 10 s writeback timeout
        assert (await host.plugin_status())["neotoma"]["writeback"]["outbox_depth"] == 1
    finally:
        await host.stop()
        stop.set()
        thread.join(timeout=2)
        for conn in accepted:
            conn.close()
        listener.close()
