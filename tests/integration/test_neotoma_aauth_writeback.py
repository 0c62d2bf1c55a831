"""Issue 5, "Neotoma + AAuth": with Neotoma configured and the AAuth plugin installed, the
full v2 intro runs end to end and both sides' reveals are recorded in Neotoma with the
signing agent's identity.

One strict Neotoma stand-in (so admission really gates the writes) on 127.0.0.1 is shared
by node_a and node_b; node_c runs the same plugins with no Neotoma configured. The relay
and every node run in ``aauth`` mode with no shared key (``aauth_kit``). Each node's grant
is provisioned with the plugin's own :class:`Provisioner` (thumbprint only, §5); the
stand-in's admission cache TTL is lowered through its constructor so the settle wait the
spec demands (> TTL after a grant write) stays short.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("darkmesh_aauth")
pytest.importorskip("darkmesh_neotoma")
pytest.importorskip("darkmesh_warm_intro")

import http_sf
from darkmesh_neotoma.grants import Provisioner
from darkmesh_neotoma.runtime import STATE_FEATURE, runtime_for, settings_for
from darkmesh_warm_intro.v2.core import TEMPLATE

from sdl_core import Host, IntroRevealed
from sdl_core.testing.mesh import InProcessMesh

sys.path.insert(0, str(Path(__file__).parent))
from aauth_kit import (
    BASE_REQUEST,
    ISS,
    SKILL,
    TAYLOR,
    AAuthMeshPlan,
    Mode,
    approve_and_reveal,
    build_mesh,
    ingest_demo,
    plan_mesh,
    signed_node_client,
)

_STANDIN = Path(__file__).resolve().parents[2] / "stores" / "neotoma" / "tests"
if str(_STANDIN) not in sys.path:
    sys.path.insert(0, str(_STANDIN))

from standin import BEARER_USER, StandinServer  # noqa: E402

NODES: dict[str, Mode] = {"node_a": "aauth", "node_b": "aauth", "node_c": "aauth"}
WRITERS = ("node_a", "node_b")  # the nodes with a [neotoma] table
TOKEN = "strict-bearer-token-writeback-0123"
#: The stand-in's admission cache lifetime (Neotoma's is 5 s; a constructor setting).
ADMISSION_TTL = 0.4
REVEAL = "warm_intro_reveal"


@pytest.fixture
def neotoma() -> Iterator[StandinServer]:
    with StandinServer(profile="strict", bearer_token=TOKEN,
                       admission_cache_ttl=ADMISSION_TTL) as server:
        yield server


def neotoma_tables(server: StandinServer) -> dict[str, dict[str, dict[str, Any]]]:
    """Each writer's ``[neotoma]``: URL, the authority Neotoma verifies, the user token
    (grant calls only; writes never carry it)."""
    table = {"url": server.url, "authority": server.neotoma.authority, "token": TOKEN,
             "outbox_initial_backoff_seconds": 0.2}
    return {node_id: {"neotoma": dict(table)} for node_id in WRITERS}


async def settle_admission(_seconds: float) -> None:
    # The provisioner waits grant_settle_seconds (> Neotoma's 5 s cache); the stand-in
    # here caches for ADMISSION_TTL, so waiting past that is the same guarantee.
    await asyncio.sleep(ADMISSION_TTL + 0.2)


async def provision(host: Host) -> dict[str, Any]:
    """``darkmesh neotoma grants provision --auto`` for ``host``, in-process."""
    assert host.signer is not None
    runtime = runtime_for(host)
    provisioner = Provisioner(client=runtime.client, identity=host.signer.identity("node"),
                              settings=settings_for(host), state=host.state(STATE_FEATURE),
                              sleep=settle_admission)
    outcome = await provisioner.run(apply=True)
    assert outcome.exit_code == 0, outcome.messages
    return outcome.plan


def stored_reveals(server: StandinServer) -> list[Any]:
    return [e for e in server.neotoma.entities.entities.values() if e.entity_type == REVEAL]


def store_requests(server: StandinServer) -> list[dict[str, Any]]:
    return [r for r in server.neotoma.requests if r["path"] == "/store"]


def key_of(node_id: str, request_id: str, consent_id: str | None, side: str) -> str:
    """§3.5: the idempotency key, computed here from the spec, not by the plugin."""
    tuple_ = f"{node_id}:{request_id}:{consent_id or '_'}:{side}"
    return "warm_intro_reveal-" + hashlib.sha256(tuple_.encode()).hexdigest()[:32]


def expected_snapshot(node_id: str, side: str, *, request_id: str, consent_id: str,
                      strength: float, revealed_at: str) -> dict[str, Any]:
    """The §3.5 entity (minus ``entity_type``) as Neotoma's snapshot holds it: nulls
    dropped, ``consent_id`` only on the requester side, no email anywhere."""
    on_requester = side == "requester"
    snapshot: dict[str, Any] = {
        "canonical_name": f"{REVEAL}:{node_id}:{request_id}:"
                          f"{consent_id if on_requester else '_'}:{side}",
        "request_id": request_id,
        "requester_node_id": "node_a", "responder_node_id": "node_b",
        "darkmesh_node_id": node_id, "side": side, "template": TEMPLATE, "approved": True,
        "relationship_strength": strength,
        "target_org": BASE_REQUEST["target"]["company"],
        "target_role": BASE_REQUEST["target"]["role"],
        "target_contact_name": TAYLOR["name"], "target_contact_org": TAYLOR["org"],
        "target_contact_role": TAYLOR["role"],
        "revealed_at": revealed_at, "data_source": f"darkmesh-node:{node_id}",
    }
    if on_requester:
        snapshot["consent_id"] = consent_id
    return snapshot


def signature_params(headers: dict[str, str]) -> dict[str, Any]:
    """The parameters of the one signature in ``Signature-Input``."""
    parsed: Any = http_sf.parse(headers["signature-input"].encode("ascii"),
                                tltype="dictionary")
    assert isinstance(parsed, dict) and len(parsed) == 1
    ((_components, params),) = parsed.values()
    assert isinstance(params, dict)
    return dict(params)


async def run_intro(mesh: InProcessMesh, plan: AAuthMeshPlan) -> dict[str, Any]:
    """Discovery → consent → node_b approves → node_a sees Taylor revealed."""
    a_operator = plan.keys["node_a"].operator
    b_operator = plan.keys["node_b"].operator
    async with signed_node_client(mesh, "node_a", a_operator, timeout=30) as a, \
            signed_node_client(mesh, "node_b", b_operator) as b:
        response = await a.post(f"{SKILL}/request", json=BASE_REQUEST)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["live_nodes"], answer["answered"]) == (2, 2), answer
        (candidate,) = answer["candidates"]
        consent = {"request_id": answer["request_id"], "consent_id": candidate["consent_id"]}
        pending = (await a.post(f"{SKILL}/consent", json=consent)).json()
        assert pending["state"] == "pending", pending

        _, result = await approve_and_reveal(mesh, a, b, consent)
    assert result["intro"]["target_contact"] == TAYLOR
    assert result["intro"]["connector"]["node_id"] == "node_b"
    return {**consent, "strength": result["intro"]["relationship_strength"]}


@pytest.mark.asyncio
async def test_v2_reveals_are_written_to_neotoma_by_each_signing_node(
        tmp_path: Path, neotoma: StandinServer) -> None:
    plan = plan_mesh(tmp_path, NODES)
    mesh = build_mesh(plan, extra_builtins={"darkmesh-neotoma"},
                      node_tables_extra=neotoma_tables(neotoma))
    async with mesh:
        hosts = mesh.nodes
        # Strict Neotoma refuses the start-up probe: no grant admits the node keys yet.
        for node_id in WRITERS:
            runtime = runtime_for(hosts[node_id])
            assert runtime.writeback.enabled
            assert runtime.probe_result is not None
            assert runtime.probe_result.outcome == "not_admitted"
        assert not runtime_for(hosts["node_c"]).active
        assert not runtime_for(hosts["node_c"]).writeback.enabled

        # Each node provisions a thumbprint-only grant for its own node key.
        grant_ids: dict[str, str] = {}
        for node_id in WRITERS:
            made = await provision(hosts[node_id])
            assert (made["action"], made["applied"]) == ("create", True)
            assert made["admitted"] is True and made["admission_reason"] == "admitted"
            assert made["thumbprint"] == plan.keys[node_id].node.thumbprint
            grant_ids[node_id] = made["grant_id"]
        for node_id, grant_id in grant_ids.items():
            grant = neotoma.neotoma.grants.grants[grant_id]
            assert grant["match_thumbprint"] == plan.keys[node_id].node.thumbprint
            assert grant["match_sub"] is None and grant["match_iss"] is None
            assert grant["status"] == "active" and grant["user_id"] == BEARER_USER
            assert {"op": "store_structured", "entity_types": [REVEAL]} in grant["capabilities"]

        for node_id in NODES:
            await ingest_demo(mesh, plan, node_id)

        async def registered() -> bool:
            assert mesh.relay is not None
            return len(await mesh.relay.backend.list_nodes()) >= len(NODES)

        await mesh.wait_until(registered, timeout=10)
        intro = await run_intro(mesh, plan)
        await mesh.wait_until(lambda: len(stored_reveals(neotoma)) >= 2, timeout=10)
        await mesh.wait_until(lambda: all(
            runtime_for(hosts[n]).writeback.status()["written"] == 1 for n in WRITERS),
            timeout=10)

        # The user reads them back (Bearer): exactly the two §3.5 entities.
        async with httpx.AsyncClient(base_url=neotoma.url, timeout=10) as user:
            listing = (await user.post(
                "/entities/query", headers={"Authorization": f"Bearer {TOKEN}"},
                json={"entity_type": REVEAL, "limit": 500, "include_snapshots": True})).json()
        assert listing["total"] == 2
        by_name = {e["canonical_name"]: e for e in listing["entities"]}
        (revealed_at,) = {e["snapshot"]["revealed_at"] for e in listing["entities"]}
        assert datetime.fromisoformat(revealed_at).utcoffset() is not None  # UTC, fixed once
        sides = {"node_a": "requester", "node_b": "responder"}
        expected = {
            node_id: expected_snapshot(node_id, side, request_id=intro["request_id"],
                                       consent_id=intro["consent_id"],
                                       strength=intro["strength"], revealed_at=revealed_at)
            for node_id, side in sides.items()
        }
        assert set(by_name) == {s["canonical_name"] for s in expected.values()}
        for snapshot in expected.values():
            entity = by_name[snapshot["canonical_name"]]
            assert entity["snapshot"] == snapshot
            assert entity["observation_count"] == 1
            assert "email" not in json.dumps(entity) and "taylor@" not in json.dumps(entity)

        # Each observation is attributed to the agent that signed it, admitted by its grant.
        for entity in stored_reveals(neotoma):
            (observation,) = entity.observations
            writer = observation.fields["darkmesh_node_id"]
            assert observation.source_priority == 90
            assert observation.attribution == {
                "tier": "software", "bearer": False, "admitted": True,
                "agent_thumbprint": plan.keys[writer].node.thumbprint,
                "agent_sub": f"darkmesh-node@{writer}", "agent_iss": ISS,
                "grant_id": grant_ids[writer],
                "agent_label": f"Darkmesh node darkmesh-node@{writer}",
            }

        # On the wire: one signed /store per side, no Bearer, exactly the §3.5 top level,
        # and every signature Darkmesh sent Neotoma carried only `created`.
        writes = store_requests(neotoma)
        assert len(writes) == 2
        for write in writes:
            body = json.loads(write["body"])
            assert list(body) == ["idempotency_key", "source_priority", "entities"]
            (entity_body,) = body["entities"]
            node_id = entity_body["darkmesh_node_id"]
            assert entity_body == {"entity_type": REVEAL, **expected[node_id]}
            assert body["source_priority"] == 90
            assert body["idempotency_key"] == key_of(
                node_id, intro["request_id"],
                intro["consent_id"] if sides[node_id] == "requester" else None, sides[node_id])
            assert "authorization" not in write["headers"]
        signed = [r for r in neotoma.neotoma.requests if "signature-input" in r["headers"]]
        assert len(signed) >= 2 + 2 * len(WRITERS)  # writes, start-up and provisioning probes
        for request in signed:
            assert set(signature_params(request["headers"])) == {"created"}, request["path"]
        for request in neotoma.neotoma.requests:
            if request["path"].startswith("/agents/grants"):
                assert "signature-input" not in request["headers"]  # grant calls are user calls

        # Idempotency: consenting again is served from the requester's cache and writes
        # nothing; re-delivering the event finds the record done; a byte-identical replay
        # of the stored body is Neotoma's `replayed:true` and adds no observation.
        async with signed_node_client(mesh, "node_a", plan.keys["node_a"].operator) as a:
            again = (await a.post(f"{SKILL}/consent", json={
                "request_id": intro["request_id"], "consent_id": intro["consent_id"]})).json()
        assert again["state"] == "revealed"
        requester_side = expected["node_a"]
        event = IntroRevealed.model_validate({
            "node_id": "node_a", "side": "requester", "template": TEMPLATE,
            "request_id": intro["request_id"], "consent_id": intro["consent_id"],
            "requester_node_id": "node_a", "responder_node_id": "node_b",
            "target": BASE_REQUEST["target"],
            "contact": {"name": TAYLOR["name"], "org": TAYLOR["org"], "role": TAYLOR["role"]},
            "relationship_strength": intro["strength"],
            "revealed_at": requester_side["revealed_at"],
        })
        await runtime_for(hosts["node_a"]).writeback(event)
        await asyncio.sleep(0.3)  # room for any write the re-consent might have queued
        assert len(store_requests(neotoma)) == 2
        for node_id in WRITERS:
            status = runtime_for(hosts[node_id]).writeback.status()
            assert (status["written"], status["outbox_depth"], status["parked"]) == (1, 0, 0)

        a_write = next(w for w in writes
                       if json.loads(w["body"])["entities"][0]["darkmesh_node_id"] == "node_a")
        replay = await runtime_for(hosts["node_a"]).client.store(a_write["body"])
        assert replay.status_code == 200, replay.text
        assert (replay.json()["replayed"], replay.json()["observations_created"]) == (True, 0)
        assert [len(e.observations) for e in stored_reveals(neotoma)] == [1, 1]
