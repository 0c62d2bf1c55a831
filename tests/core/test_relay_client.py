"""``RelayClient``: calls against a real relay app, and what goes on the wire."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr

from sdl_core import RelayError
from sdl_core.host import Host, RelayHost
from sdl_core.plugins import make_plugin_manager
from sdl_core.protocols import AgentIdentity
from sdl_core.relay.app import create_relay_app
from sdl_core.relay.client import RelayClient, decode_payload
from sdl_core.settings import NodeSettings, RelaySettings

KEY = "relay-secret"
RELAY_URL = "http://relay.test"


@pytest_asyncio.fixture
async def relay(tmp_path: Path) -> AsyncIterator[RelayHost]:
    pm = make_plugin_manager(only={"darkmesh-sdl.memory"})
    host = RelayHost(pm, RelaySettings(key=SecretStr(KEY), backend="memory", data_dir=tmp_path,
                                       auth_mode="hmac"))
    await host.start()
    yield host
    await host.stop()


def node_host(transport: httpx.AsyncBaseTransport, node_id: str = "node_a",
              **overrides: Any) -> Host:
    values: dict[str, Any] = {"node_id": node_id, "relay_url": RELAY_URL, "relay_key": KEY,
                              "capabilities": ["warm_intro_v1"], "auth_mode": "hmac",
                              "store": "memory", "listener": False}
    values.update(overrides)
    pm = make_plugin_manager(only={"darkmesh-sdl.memory-store"}, environ={})
    host = Host(pm, NodeSettings(**values), transport=transport)
    # The client needs only the transport; the rest of start-up is not under test.
    host.transport = transport
    return host


def client_for(relay: RelayHost, node_id: str = "node_a", **overrides: Any) -> RelayClient:
    transport = httpx.ASGITransport(app=create_relay_app(relay))
    return RelayClient(node_host(transport, node_id, **overrides))


class Recorder:
    """A MockTransport handler that records requests and answers canned JSON."""

    def __init__(self, answer: Any = None, status: int = 200) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = answer if answer is not None else {"ok": True}
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if isinstance(self.answer, bytes):
            return httpx.Response(self.status, content=self.answer)
        return httpx.Response(self.status, json=self.answer)

    def body(self, index: int = -1) -> dict[str, Any]:
        value = json.loads(self.requests[index].content or b"{}")
        assert isinstance(value, dict)
        return value


def recorded(answer: Any = None, status: int = 200, **overrides: Any) -> tuple[RelayClient,
                                                                                Recorder]:
    recorder = Recorder(answer, status)
    return RelayClient(node_host(httpx.MockTransport(recorder), **overrides)), recorder


# -------------------------------------------------------------- against a relay


@pytest.mark.asyncio
async def test_register_publish_pull_round_trip(relay: RelayHost) -> None:
    a, b = client_for(relay, "node_a"), client_for(relay, "node_b")
    registered = await b.register()
    assert registered["node"]["node_id"] == "node_b"
    assert registered["node"]["url"] == "http://localhost:8001"
    published = await a.publish({"request_id": "r1", "requester_id": "node_a",
                                 "requester_url": "http://localhost:8001",
                                 "template": "warm_intro_v1", "response_token": "t" * 32})
    assert published["seq"] == 1 and published["live_nodes"] == 1
    reply = await b.pull(0)
    assert [p["request_id"] for p in reply["posts"]] == ["r1"]
    assert reply["cursor"] == 1 and reply["epoch"] == await relay.backend.epoch()
    assert (await a.pull(0))["posts"] == []  # own post
    assert [n["node_id"] for n in await a.list_nodes()] == ["node_b"]


@pytest.mark.asyncio
async def test_mailbox_round_trip_through_an_alias(relay: RelayHost) -> None:
    a, b = client_for(relay, "node_a"), client_for(relay, "node_b")
    await b.register(aliases=["pseudo-7"])
    await a.mailbox_send("pseudo-7", "req-1", b"\x00sealed\xff")
    [message] = await b.mailbox_pull()
    assert message.sender == "node_a" and message.sender_verified is False
    assert message.request_id == "req-1" and message.to == "node_b"
    assert decode_payload(message) == b"\x00sealed\xff"
    assert await b.mailbox_ack([message.id, message.id]) == 1
    assert await b.mailbox_pull() == []


@pytest.mark.asyncio
async def test_relay_refusals_raise_relay_error(relay: RelayHost) -> None:
    wrong = client_for(relay, relay_key="not-the-key")
    with pytest.raises(RelayError) as info:
        await wrong.pull(0)
    assert info.value.status == 403 and info.value.detail == "invalid relay_key"
    with pytest.raises(RelayError) as info:
        await client_for(relay).mailbox_send("nobody", "r", b"x")
    assert info.value.status == 404


# ------------------------------------------------------------------ on the wire


@pytest.mark.asyncio
async def test_unsigned_calls_carry_only_the_relay_key() -> None:
    client, rec = recorded({"node_id": "node_a", "cursor": 0, "posts": []},
                           node_key="operator-secret")
    await client.pull(0)
    assert rec.body()["relay_key"] == KEY
    assert "x-darkmesh-key" not in rec.requests[-1].headers  # node key never to the relay
    rec.answer = {"nodes": []}
    await client.list_nodes()
    assert rec.requests[-1].headers["x-darkmesh-key"] == KEY
    assert rec.requests[-1].url == httpx.URL(f"{RELAY_URL}/darkmesh/relay/nodes")
    rec.answer = {"ok": True, "id": "m", "created_at": 1.0}
    await client.mailbox_send("node_b", "r", b"x")
    assert rec.body()["relay_key"] == KEY and rec.body()["from"] == "node_a"
    assert rec.requests[-1].headers["x-darkmesh-key"] == KEY


class FakeSigner:
    """Marks requests as signed, as the AAuth signer would."""

    def has_role(self, role: str) -> bool:
        return role == "node"

    def identity(self, role: str = "node") -> AgentIdentity:
        return AgentIdentity(sub="darkmesh-node@node_a", iss="x", thumbprint="t", public_jwk={})

    def auth(self, role: str = "node", *, authority: str | None = None,
             profile: str = "darkmesh") -> httpx.Auth:
        class Sign(httpx.Auth):
            def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, Any, None]:
                request.headers["Signature-Key"] = "sig=jwt"
                yield request

        return Sign()


@pytest.mark.asyncio
async def test_signed_calls_never_carry_the_shared_key() -> None:
    client, rec = recorded({"ok": True, "node": {}}, auth_mode="either")
    client.host.signer = FakeSigner()
    assert client.signing() is True
    await client.register(aliases=["p1"])
    assert rec.requests[-1].headers["signature-key"] == "sig=jwt"
    assert "relay_key" not in rec.body()
    assert rec.body()["aliases"] == ["p1"]
    rec.answer = {"nodes": []}
    await client.list_nodes()
    assert "x-darkmesh-key" not in rec.requests[-1].headers


@pytest.mark.asyncio
async def test_relay_outbound_auth_overrides_the_choice() -> None:
    client, rec = recorded({"ok": True}, auth_mode="either", relay_outbound_auth="hmac")
    client.host.signer = FakeSigner()
    assert client.signing() is False
    await client.publish({"request_id": "r"})
    assert rec.body()["relay_key"] == KEY
    assert "signature-key" not in rec.requests[-1].headers
    forced, _ = recorded({"ok": True}, relay_outbound_auth="aauth")
    with pytest.raises(RelayError, match="DARKMESH_RELAY_OUTBOUND_AUTH=aauth"):
        await forced.publish({"request_id": "r"})


@pytest.mark.asyncio
async def test_long_poll_timeout_exceeds_the_wait() -> None:
    client, rec = recorded({"node_id": "node_a", "cursor": 0, "posts": [], "epoch": "e"})
    await client.pull(3, limit=7, wait=25)
    sent = rec.body()
    assert sent["wait"] == 25 and sent["cursor"] == 3 and sent["limit"] == 7
    assert sent["capabilities"] == ["warm_intro_v1"]
    timeout = rec.requests[-1].extensions["timeout"]
    assert timeout["read"] > 25
    await client.pull(0)
    assert "wait" not in rec.body()  # upstream relays get upstream bodies


@pytest.mark.asyncio
async def test_upstream_pull_reply_has_epoch_none() -> None:
    client, _ = recorded({"node_id": "node_a", "cursor": 4, "posts": [{"seq": 4}, "junk"]})
    reply = await client.pull(0)
    assert reply["epoch"] is None and reply["cursor"] == 4 and reply["posts"] == [{"seq": 4}]


@pytest.mark.asyncio
@pytest.mark.parametrize("answer,status,match", [
    ({"posts": []}, 200, "integer cursor"),
    (b"<html>oops</html>", 200, "non-object"),
    (b"<html>bad gateway</html>", 502, "bad gateway"),
    ({"detail": "relay backend unavailable: x"}, 503, "unavailable"),
])
async def test_malformed_or_failed_answers_raise(answer: Any, status: int, match: str) -> None:
    client, _ = recorded(answer, status)
    with pytest.raises(RelayError, match=match):
        await client.pull(0)


@pytest.mark.asyncio
async def test_unreachable_relay_is_status_0() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = RelayClient(node_host(httpx.MockTransport(refuse)))
    with pytest.raises(RelayError) as info:
        await client.register()
    assert info.value.status == 0 and "unreachable" in str(info.value.detail)


@pytest.mark.asyncio
async def test_no_relay_configured_is_a_clear_error() -> None:
    client, _ = recorded(relay_url="")
    with pytest.raises(RelayError, match="DARKMESH_RELAY_URL"):
        await client.register()


@pytest.mark.asyncio
async def test_mailbox_ack_is_chunked_and_deduplicated() -> None:
    client, rec = recorded({"ok": True, "acked": 3})
    ids = [f"m{i}" for i in range(1500)] + ["m0"]
    assert await client.mailbox_ack(ids) == 6
    assert [len(rec.body(i)["ids"]) for i in range(2)] == [1000, 500]


@pytest.mark.asyncio
async def test_malformed_mailbox_message_raises() -> None:
    client, _ = recorded({"node_id": "node_a", "messages": [{"id": "x"}]})
    with pytest.raises(RelayError, match="malformed mailbox message"):
        await client.mailbox_pull()
