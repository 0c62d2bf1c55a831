"""The live store (Phase 1): Neotoma reads with a TTL cache, fallback and recovery.

``StoreContract`` runs against the store with Neotoma unreachable: then every read and
write is the fallback's, and the contract (write → read round trips) must hold. With
Neotoma up, the read path is read-only by design (contacts come from Neotoma, writes go
to the fallback), so round trips cannot hold there; those reads are tested below.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from conftest import STRICT_TOKEN, FakeClock, node_host, running, started
from darkmesh_neotoma.store import NeotomaStore
from standin import StandinServer

from sdl_core import UnknownPluginError
from sdl_core.testing.store_contract import StoreContract

TAYLOR = {"entity_type": "contact", "name": "Taylor BD", "email": "taylor@companyx.com",
          "organization": "Company X", "title": "Business Development"}


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def store_entities(server: StandinServer, key: str, *entities: dict[str, Any],
                   bearer: str | None = None) -> None:
    headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
    response = httpx.post(server.url + "/store", headers=headers,
                          json={"idempotency_key": key, "entities": list(entities)})
    assert response.status_code == 200, response.text


def queries(server: StandinServer) -> int:
    return sum(1 for r in server.neotoma.requests if r["path"] == "/entities/query")


class TestFallbackPathContract(StoreContract):
    """The Store contract, through the Neotoma store while Neotoma is down."""

    large_batch_size = 2_000

    @pytest_asyncio.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[NeotomaStore]:
        host = node_host(tmp_path, closed_port_url(), signer=None,
                         neotoma={"retry_after_seconds": 3600})
        host.prepare()
        assert isinstance(host.store, NeotomaStore)
        yield host.store
        await host.stop()


@pytest.mark.asyncio
async def test_contacts_and_interactions_come_live_from_neotoma(
    standin: StandinServer, tmp_path: Path
) -> None:
    store_entities(standin, "seed", TAYLOR,
                   {"entity_type": "contact", "name": "Me Myself", "email": "me@node-b.org"})
    node = node_host(tmp_path, standin.url, self_identifiers=["ME@node-b.org"])
    async with running(node) as host:
        contacts = [r async for r in host.store.iterate("contacts")]
        assert [c["email"] for c in contacts] == ["taylor@companyx.com"]
        assert contacts[0]["org"] == "Company X" and contacts[0]["role"] == "Business Development"
        assert contacts[0]["neotoma_entity_id"].startswith("ent_")
        interactions = [r async for r in host.store.iterate("interactions")]
        assert interactions == [{"email": "taylor@companyx.com",
                                 "strength": contacts[0]["strength"]}]
        assert await host.store.count("contacts") == 1
        # Writes go to the fallback; reads stay live.
        await host.store.upsert("contacts", [{"email": "vault@x.com", "name": "V"}])
        assert [c["email"] async for c in host.store.iterate("contacts")] == [
            "taylor@companyx.com"]
        status = host.store.status()  # type: ignore[attr-defined]
        assert status["mode"] == "live" and status["last_error"] is None
        assert status["admission"] == "no_match"


@pytest.mark.asyncio
async def test_ttl_cache_warm_and_expired(standin: StandinServer, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    store_entities(standin, "seed", TAYLOR)
    host = await started(node_host(tmp_path, standin.url, neotoma={"cache_ttl_seconds": 15}))
    try:
        before = queries(standin)
        for _ in range(5):
            assert await host.store.count("contacts") == 1
        assert await host.store.count("interactions") == 1
        assert queries(standin) == before + 1  # one read serves both datasets within the TTL
        marker = await host.store.changed_marker("contacts")
        store_entities(standin, "more", {"entity_type": "contact", "name": "Casey",
                                         "email": "casey@x.com"})
        assert await host.store.count("contacts") == 1  # still cached
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 16)
        assert await host.store.count("contacts") == 2
        assert queries(standin) == before + 2
        assert await host.store.changed_marker("contacts") != marker
    finally:
        monkeypatch.undo()
        await host.stop()


@pytest.mark.asyncio
async def test_fallback_logs_shows_status_and_recovers(
    standin: StandinServer, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="darkmesh.neotoma")
    store_entities(standin, "seed", TAYLOR)
    async with running(node_host(tmp_path, standin.url, neotoma={
        "cache_ttl_seconds": 0, "retry_after_seconds": 0.2})) as host:
        await host.store.upsert("contacts", [{"email": "vault@x.com", "name": "Vault Only"}])
        assert [c["email"] async for c in host.store.iterate("contacts")] == [
            "taylor@companyx.com"]
        standin.stop()
        assert [c["email"] async for c in host.store.iterate("contacts")] == ["vault@x.com"]
        status = (await host.plugin_status())["neotoma"]["store"]
        assert status["mode"] == "fallback" and status["last_error"]
        assert sum("Neotoma unreachable" in r.message for r in caplog.records) == 1
        # Within retry_after the fallback answers without waiting for Neotoma.
        assert await host.store.count("contacts") == 1
        assert sum("Neotoma unreachable" in r.message for r in caplog.records) == 1
        standin.start()
        await asyncio.sleep(0.25)
        assert [c["email"] async for c in host.store.iterate("contacts")] == [
            "taylor@companyx.com"]
        assert host.store.status()["mode"] == "live"  # type: ignore[attr-defined]
        assert any("reachable again" in r.message for r in caplog.records)


@pytest.mark.asyncio
async def test_neotoma_http_errors_fall_back_too(standin: StandinServer, tmp_path: Path) -> None:
    async with running(node_host(tmp_path, standin.url, neotoma={"cache_ttl_seconds": 0})) as host:
        await host.store.upsert("contacts", [{"email": "vault@x.com"}])
        standin.neotoma.fail_with = 503
        assert [c["email"] async for c in host.store.iterate("contacts")] == ["vault@x.com"]
        assert "503" in (host.store.status()["last_error"] or "")  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_other_datasets_from_entities_of_that_type_else_fallback(
    standin: StandinServer, tmp_path: Path
) -> None:
    async with running(node_host(tmp_path, standin.url, neotoma={"cache_ttl_seconds": 0})) as host:
        await host.store.upsert("writer_activity", [{"id": "w-vault", "writer": "vault"}])
        rows = [r async for r in host.store.iterate("writer_activity")]
        assert rows == [{"id": "w-vault", "writer": "vault"}]  # none in Neotoma: vault
        store_entities(standin, "wa", {"entity_type": "writer_activity",
                                       "canonical_name": "wa:1", "writer": "neo", "posts": 3})
        rows = [r async for r in host.store.iterate("writer_activity")]
        assert len(rows) == 1 and rows[0]["writer"] == "neo" and rows[0]["posts"] == 3
        assert rows[0]["neotoma_entity_id"].startswith("ent_")


@pytest.mark.asyncio
async def test_read_auth_bearer(strict_standin: StandinServer, tmp_path: Path) -> None:
    store_entities(strict_standin, "seed", TAYLOR, bearer=STRICT_TOKEN)
    async with running(node_host(tmp_path, strict_standin.url, neotoma={
        "read_auth_mode": "bearer", "token": STRICT_TOKEN})) as host:
        assert await host.store.count("contacts") == 1
        last = [r for r in strict_standin.neotoma.requests if r["path"] == "/entities/query"][-1]
        assert last["headers"]["authorization"] == f"Bearer {STRICT_TOKEN}"
        assert "signature" not in last["headers"]


@pytest.mark.asyncio
async def test_read_auth_aauth_needs_admission_in_strict(
    strict_standin: StandinServer, tmp_path: Path, clock: FakeClock
) -> None:
    store_entities(strict_standin, "seed", TAYLOR, bearer=STRICT_TOKEN)
    async with running(node_host(tmp_path, strict_standin.url, neotoma={
        "read_auth_mode": "aauth", "cache_ttl_seconds": 0, "retry_after_seconds": 0.01})) as host:
        # Not admitted: 401, so the fallback serves (and the probe said not_admitted).
        assert await host.store.count("contacts") == 0
        assert (await host.plugin_status())["neotoma"]["admission"]["outcome"] == "not_admitted"
        assert host.signer is not None
        thumbprint = host.signer.identity("node").thumbprint
        grant = httpx.post(strict_standin.url + "/agents/grants",
                           headers={"authorization": f"Bearer {STRICT_TOKEN}"},
                           json={"label": "node_b", "match_thumbprint": thumbprint,
                                 "capabilities": [{"op": "retrieve",
                                                   "entity_types": ["contact"]}]})
        assert grant.status_code == 201
        clock.advance(6)
        await asyncio.sleep(0.02)
        assert await host.store.count("contacts") == 1
        last = [r for r in strict_standin.neotoma.requests
                if r["path"] == "/entities/query"][-1]
        assert "signature" in last["headers"] and "authorization" not in last["headers"]
        assert "expires" not in last["headers"]["signature-input"]


@pytest.mark.asyncio
async def test_read_auth_auto_prefers_signed_once_admitted(
    standin: StandinServer, tmp_path: Path
) -> None:
    host = node_host(tmp_path, standin.url, neotoma={"token": "dev-token"})
    host.prepare()
    runtime = host.store.runtime  # type: ignore[attr-defined]
    assert runtime.client.read_mode() == "bearer"  # not probed yet: the token
    runtime.client.admitted = True
    assert runtime.client.read_mode() == "aauth"
    await host.stop()
    unsigned = node_host(tmp_path / "u", standin.url, signer=None)
    unsigned.prepare()
    assert unsigned.store.runtime.client.read_mode() == "none"  # type: ignore[attr-defined]
    await unsigned.stop()


def test_unknown_fallback_store_names_choices(tmp_path: Path) -> None:
    host = node_host(tmp_path, closed_port_url(), fallback="nope")
    with pytest.raises(UnknownPluginError, match="DARKMESH_NEOTOMA_FALLBACK_STORE") as info:
        host.prepare()
    assert "memory" in str(info.value) and "vault" in str(info.value)
