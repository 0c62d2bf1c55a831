"""Warm intro on Neotoma: a node with an empty vault and Taylor in Neotoma answers as a
vault node holding the same contacts would (discovery, answering and reveal all read
through ``host.store``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("darkmesh_warm_intro")
pytest.importorskip("darkmesh_neotoma")

from darkmesh_neotoma.mapping import map_entities
from darkmesh_neotoma.store import NeotomaStore
from darkmesh_warm_intro import plugin as warm_intro
from darkmesh_warm_intro.cluster import demo_rows

from sdl_core.testing.host import TEST_BUILTINS
from sdl_core.testing.mesh import InProcessMesh

_STANDIN = Path(__file__).resolve().parents[2] / "stores" / "neotoma" / "tests"
if str(_STANDIN) not in sys.path:
    sys.path.insert(0, str(_STANDIN))

from standin import StandinServer  # noqa: E402

SKILL = "/darkmesh/skills/warm-intro"
TARGET = {"target": {"company": "Company X", "role": "Business Development"}}
CASEY = "casey@connector.com"


@pytest.fixture
def neotoma() -> Iterator[StandinServer]:
    with StandinServer(profile="dev") as server:
        # Taylor observed 8 times, Jordan once: Neotoma-derived strengths differ.
        for round_ in range(8):
            entities = [{"entity_type": "contact", "name": "Taylor BD",
                         "email": "taylor@companyx.com", "organization": "Company X",
                         "title": "Business Development"}]
            if round_ == 0:
                entities.append({"entity_type": "contact", "name": "Jordan Ops",
                                 "email": "jordan@companyy.com", "organization": "Company Y",
                                 "title": "Operations"})
            answer = httpx.post(server.url + "/store", json={
                "idempotency_key": f"seed-{round_}", "entities": entities})
            assert answer.status_code == 200
        yield server


def mapped_contacts(server: StandinServer) -> list[dict[str, Any]]:
    body = httpx.post(server.url + "/entities/query",
                      json={"entity_type": "contact", "limit": 500}).json()
    contacts, _ = map_entities(body["entities"], now=time.time())
    return [c.contact() for c in contacts]


@pytest.mark.asyncio
async def test_neotoma_node_answers_like_a_vault_node(neotoma: StandinServer) -> None:
    overrides = {
        "node_a": {"self_identifiers": ["founder@startup.com"]},
        "node_b": {"self_identifiers": [CASEY]},
        "node_n": {"self_identifiers": [CASEY], "store": "neotoma"},
    }
    tables = {"warm_intro": {"response_wait_seconds": 5.0},
              "neotoma": {"url": neotoma.url, "fallback_store": "memory"}}
    async with InProcessMesh(["node_a", "node_b", "node_n"], plugins=[warm_intro],
                             node_overrides=overrides, tables=tables,
                             builtins=set(TEST_BUILTINS) | {"darkmesh-neotoma"}) as mesh:
        assert isinstance(mesh.nodes["node_n"].store, NeotomaStore)
        assert await mesh.nodes["node_n"].store.count("contacts") == 2  # empty vault
        as_vault = mapped_contacts(neotoma)
        for node_id, data in (("node_a", {"contacts": demo_rows("node_a_contacts.csv"),
                                          "interactions": demo_rows("node_a_interactions.csv")}),
                              ("node_b", {"contacts": as_vault})):
            async with mesh.client(node_id) as http:
                for dataset, records in data.items():
                    r = await http.post("/darkmesh/ingest",
                                        json={"dataset": dataset, "records": records})
                    assert r.status_code == 200, r.text

        async def registered() -> bool:
            async with mesh.relay_client() as relay:
                return len((await relay.get("/darkmesh/relay/nodes")).json()["nodes"]) == 3

        await mesh.wait_until(registered)
        async with mesh.client("node_a", timeout=30) as a:
            answer = (await a.post(f"{SKILL}/request", json=TARGET)).json()
        assert answer["answered"] == 2, answer
        by_score = {c["score"] for c in answer["candidates"]}
        taylor = next(c for c in as_vault if c["email"] == "taylor@companyx.com")
        expected = round(0.6 * 0.92 + 0.4 * max(0.5, taylor["strength"]), 3)
        assert len(answer["candidates"]) == 2 and by_score == {expected}

        # Consent to both (candidates are pseudonymous); node_n's operator approves its
        # own, and the reveal carries the contact node_n read from Neotoma.
        consents = [{"request_id": answer["request_id"], "consent_id": c["consent_id"]}
                    for c in answer["candidates"]]
        async with mesh.client("node_a", timeout=30) as a, mesh.client("node_n") as n:
            for consent in consents:
                state = (await a.post(f"{SKILL}/consent", json=consent)).json()
                assert state["state"] == "pending", state
            approvals: list[dict[str, Any]] = []

            async def has_approval() -> bool:
                approvals[:] = (await n.get(f"{SKILL}/approvals")).json()["approvals"]
                return bool(approvals)

            await mesh.wait_until(has_approval, timeout=10)
            r = await n.post(f"{SKILL}/approvals/{approvals[0]['approval_id']}/approve")
            assert r.json()["state"] == "approved"
            revealed: list[dict[str, Any]] = []

            async def one_revealed() -> bool:
                revealed.clear()
                for consent in consents:
                    result = (await a.post(f"{SKILL}/consent", json=consent)).json()
                    if result["state"] == "revealed":
                        revealed.append(result)
                return bool(revealed)

            await mesh.wait_until(one_revealed, timeout=10)
        [intro] = [r["intro"] for r in revealed]
        assert intro["connector"]["node_id"] == "node_n"
        assert intro["target_contact"]["name"] == "Taylor BD"
        assert intro["target_contact"]["email"] == "taylor@companyx.com"
        status = mesh.nodes["node_n"].store.status()  # type: ignore[attr-defined]
        assert status["mode"] == "live" and status["reads"]["fallback"] == 0
