"""The replay cache (``aauth.md`` §2.5): one signed request is accepted once, on a node
(its database) and on a relay (its backend's ``remember_once``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from darkmesh_aauth.keys import P256_ORDER, canonical_signature
from darkmesh_aauth.registry import TrustRegistry
from darkmesh_aauth.sfv import parse_dictionary, serialize_dictionary
from darkmesh_aauth.testing import MemoryReplayCache, inbound, new_agent, write_trust_file
from darkmesh_aauth.verifier import AAuthVerifier

from sdl_core import HTTPProblem, RelayHost, RelaySettings, make_plugin_manager

RELAY_URL = "http://localhost:9000"


@pytest_asyncio.fixture
async def relay(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    from sdl_core.relay.app import create_relay_app

    agent = new_agent(sub="darkmesh-node@node_a", capabilities=("relay.list",))
    registry = write_trust_file(tmp_path / "relay_agents.json", [agent])
    pm = make_plugin_manager(only={"darkmesh-sdl.memory", "darkmesh-aauth"}, environ={})
    settings = RelaySettings(backend="memory", auth_mode="aauth", public_url=RELAY_URL)
    host = RelayHost(pm, settings, {"aauth": {"relay_trusted_agents_file": str(registry)}})
    app = create_relay_app(host)
    await host.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=RELAY_URL) as client:
        yield client, agent
    await host.stop()


@pytest.mark.asyncio
async def test_node_accepts_a_signed_request_once(make_node: Callable[..., Any]) -> None:
    agent = new_agent(capabilities=("node.query",))
    node = await make_node([agent])
    url = "http://localhost:8001/darkmesh/skills/echo/echo"
    for method, body in (("GET", b""), ("POST", b'{"same": true}')):
        headers = agent.sign(method, url, body=body)
        first = await node.client.request(method, url, headers=headers, content=body)
        second = await node.client.request(method, url, headers=headers, content=body)
        assert first.status_code == 200
        assert second.status_code == 401
        assert second.json()["reason"] == "replayed"
    # A fresh signature of the same request is a new request.
    fresh = await node.client.get(url, headers=agent.sign("GET", url))
    assert fresh.status_code == 200


@pytest.mark.asyncio
async def test_relay_accepts_a_signed_request_once(relay: tuple[httpx.AsyncClient, Any]) -> None:
    client, agent = relay
    url = f"{RELAY_URL}/darkmesh/relay/nodes"
    headers = agent.sign("GET", url)
    first = await client.get(url, headers=headers)
    assert first.status_code == 200, first.text
    second = await client.get(url, headers=headers)
    assert second.status_code == 401
    assert second.json()["reason"] == "replayed"
    assert second.headers["signature-error"] == "error=invalid_signature"


def _high_s(signature: bytes) -> bytes:
    s = int.from_bytes(signature[32:], "big")
    return signature[:32] + (P256_ORDER - s).to_bytes(32, "big")


def test_es256_signatures_are_canonicalised_to_low_s() -> None:
    agent = new_agent("ES256")
    raw = agent.key.sign(b"message")
    flipped = _high_s(raw)
    assert flipped != raw
    assert canonical_signature("ES256", raw) == canonical_signature("ES256", flipped)
    assert int.from_bytes(canonical_signature("ES256", raw)[32:], "big") <= P256_ORDER // 2


@pytest.mark.asyncio
async def test_the_other_ecdsa_form_of_a_used_signature_is_a_replay(tmp_path: Path) -> None:
    agent = new_agent("ES256")
    verifier = AAuthVerifier(TrustRegistry(write_trust_file(tmp_path / "r.json", [agent])))
    cache = MemoryReplayCache()
    url = "http://localhost:8001/p"
    headers = agent.sign("GET", url)
    await verifier.verify(inbound("GET", url, headers), authorities=["localhost:8001"],
                          remember_once=cache)
    ((label, (signature, params)),) = parse_dictionary(headers["Signature"]).items()
    twin = dict(headers, Signature=serialize_dictionary({label: (_high_s(signature), params)}))
    with pytest.raises(HTTPProblem) as refused:
        await verifier.verify(inbound("GET", url, twin), authorities=["localhost:8001"],
                              remember_once=cache)
    assert refused.value.reason == "replayed"


@pytest.mark.asyncio
async def test_replay_entries_live_until_created_plus_window(tmp_path: Path) -> None:
    agent = new_agent()
    verifier = AAuthVerifier(TrustRegistry(write_trust_file(tmp_path / "r.json", [agent])))
    seen: list[tuple[str, float]] = []

    async def remember(key: str, ttl: float) -> bool:
        seen.append((key, ttl))
        return True

    created = int(time.time())
    url = "http://localhost:8001/p"
    await verifier.verify(inbound("GET", url, agent.sign("GET", url, now=created)),
                          authorities=["localhost:8001"], remember_once=remember)
    ((_, ttl),) = seen
    # expires = created + 60 = created + W, so the entry lives until then.
    assert 55 <= ttl <= 61


@pytest.mark.asyncio
async def test_full_replay_cache_is_503_not_eviction(tmp_path: Path) -> None:
    agent = new_agent()
    verifier = AAuthVerifier(TrustRegistry(write_trust_file(tmp_path / "r.json", [agent])),
                             max_replay_entries=2)
    cache = MemoryReplayCache()
    url = "http://localhost:8001/p"
    for _ in range(2):
        await verifier.verify(inbound("GET", url, agent.sign("GET", url)),
                              authorities=["localhost:8001"], remember_once=cache)
    with pytest.raises(HTTPProblem) as full:
        await verifier.verify(inbound("GET", url, agent.sign("GET", url)),
                              authorities=["localhost:8001"], remember_once=cache)
    assert full.value.status == 503
    assert full.value.detail == "AAuth not available: replay cache full"
    assert len(cache.entries) == 2  # nothing evicted
