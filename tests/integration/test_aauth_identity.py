"""Identity binding through the real relay app (aauth.md §4.2, DESIGN.md §7): a key for
``darkmesh-node@node_a`` cannot register, pull, publish or read mail as ``node_b``,
whatever its capabilities (``*`` included); the relay stamps a mailbox sender from the
signature, never from the body. Run against both built-in relay backends."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from aauth_kit import RELAY_CAPABILITIES, Identity, identity, plan_mesh

from sdl_core import RelayHost
from sdl_core.plugins import make_plugin_manager
from sdl_core.relay.app import create_relay_app
from sdl_core.settings import RelaySettings, load_settings

RELAY = "http://relay.test"
A_SUB = "darkmesh-node@node_a"


@asynccontextmanager
async def aauth_relay(trust_file: Path, backend: str, data_dir: Path
                      ) -> AsyncIterator[httpx.AsyncBaseTransport]:
    """The relay app in ``aauth`` mode, started, on an ASGI transport."""
    tables = {"aauth": {"relay_trusted_agents_file": str(trust_file)}}
    settings = load_settings(RelaySettings, tables, overrides={
        "backend": backend, "auth_mode": "aauth", "key": "", "public_url": RELAY,
        "data_dir": str(data_dir)})
    builtin = "darkmesh-sdl.memory" if backend == "memory" else "darkmesh-sdl.sqlite"
    relay = RelayHost(make_plugin_manager(only={builtin, "darkmesh-aauth"}, environ={}),
                      settings, tables)
    app = create_relay_app(relay)
    await relay.start()
    try:
        yield httpx.ASGITransport(app=app)
    finally:
        await relay.stop()


def client(transport: httpx.AsyncBaseTransport, who: Identity) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, base_url=RELAY, auth=who.auth())


async def post(http: httpx.AsyncClient, path: str, body: Mapping[str, object]
               ) -> httpx.Response:
    return await http.post(f"/darkmesh/relay/{path}", json=body)


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_node_key_cannot_act_as_another_node(tmp_path: Path, backend: str) -> None:
    plan = plan_mesh(tmp_path, {"node_a": "aauth", "node_b": "aauth"})
    # node_a signs with ES256 here, node_b with Ed25519: binding is about the sub.
    a = identity(A_SUB, RELAY_CAPABILITIES, alg="ES256")
    b = plan.keys["node_b"].node
    plan.write_relay_trust([a, b])
    templates = ["warm_intro_v2"]
    async with aauth_relay(plan.relay_trust, backend, tmp_path / "relay") as transport, \
            client(transport, b) as as_b:
        for who, node_id in ((a, "node_a"), (b, "node_b")):
            async with client(transport, who) as http:
                r = await post(http, "nodes/register", {
                    "node_id": node_id, "url": f"http://{node_id}.test",
                    "capabilities": templates})
                assert r.status_code == 200, r.text

        for grant in (RELAY_CAPABILITIES, ("*",)):
            a = a.granting(grant)
            plan.write_relay_trust([a, b])  # hot-reloaded on the next request
            async with client(transport, a) as as_a:
                for path, body, refusal in (
                    ("nodes/register", {"node_id": "node_b", "url": "http://evil.test"},
                     "match node_id 'node_b'"),
                    ("posts/pull", {"node_id": "node_b", "capabilities": templates},
                     "match node_id 'node_b'"),
                    ("posts", {"request_id": "rq-1", "requester_id": "node_b",
                               "template": "warm_intro_v2", "target": {"company": "X"}},
                     "match requester_id 'node_b'"),
                    ("mailbox/pull", {"node_id": "node_b"}, "own mailbox 'node_b'"),
                    ("mailbox/ack", {"node_id": "node_b", "ids": ["m1"]},
                     "own mailbox 'node_b'"),
                ):
                    refused = await post(as_a, path, body)
                    assert refused.status_code == 403, (grant, path, refused.text)
                    assert refused.json()["detail"] == f"AAuth sub '{A_SUB}' does not {refusal}"
                    assert "signature-error" not in refused.headers
                # Nor by taking node_b's id as an alias, which would divert its mail.
                taken = await post(as_a, "nodes/register", {
                    "node_id": "node_a", "url": "http://node_a.test", "aliases": ["node_b"]})
                assert (taken.status_code, taken.json()["detail"]) == (
                    409, "alias 'node_b' is already registered")
                # As itself, with the same key, everything is fine.
                mine = await post(as_a, "posts/pull", {"node_id": "node_a",
                                                       "capabilities": templates})
                assert mine.status_code == 200, mine.text

                # Mail "from node_b" is delivered as from node_a, verified.
                sent = await post(as_a, "mailbox/send", {
                    "to": "node_b", "from": "node_b", "request_id": f"rq-{grant[0]}",
                    "payload": "aGVsbG8="})
                assert sent.status_code == 200, sent.text
            inbox = (await post(as_b, "mailbox/pull", {"node_id": "node_b"})).json()
            (message,) = [m for m in inbox["messages"] if m["request_id"] == f"rq-{grant[0]}"]
            assert (message["from"], message["from_verified"]) == ("node_a", True)
            acked = await post(as_b, "mailbox/ack", {"node_id": "node_b",
                                                     "ids": [message["id"]]})
            assert acked.json() == {"ok": True, "acked": 1}


@pytest.mark.asyncio
async def test_a_captured_request_replays_nowhere(tmp_path: Path) -> None:
    """The relay's replay cache is its backend's ``remember_once``: a signed request
    accepted once is refused the second time, byte for byte the same."""
    plan = plan_mesh(tmp_path, {"node_a": "aauth"})
    a = plan.keys["node_a"].node
    body = b'{"node_id":"node_a","capabilities":["warm_intro_v2"]}'
    url = f"{RELAY}/darkmesh/relay/posts/pull"
    headers = a.agent.sign("POST", url, headers={"Content-Type": "application/json"},
                           body=body)
    async with aauth_relay(plan.relay_trust, "sqlite", tmp_path / "relay") as transport, \
            httpx.AsyncClient(transport=transport) as raw:
        first = await raw.post(url, content=body, headers=headers)
        again = await raw.post(url, content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert (again.status_code, again.json()["reason"]) == (401, "replayed")
