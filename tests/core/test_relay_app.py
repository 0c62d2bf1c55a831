"""The relay app through ``httpx.ASGITransport``: every route, success and refusal.

Signed requests use a fake verifier plugin (the real one is ``darkmesh-aauth``'s): the
guard treats a request with ``Signature-Key`` as signed and the fake returns the agent
named in it, so these tests pin the relay's identity binding, not the crypto.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr

from sdl_core.host import RelayHost
from sdl_core.plugins import hookimpl, make_plugin_manager
from sdl_core.protocols import InboundRequest, JSONObject, VerifiedAgent
from sdl_core.relay import models as m
from sdl_core.relay.app import create_relay_app, relay_route_specs
from sdl_core.settings import RelaySettings
from sdl_core.specs import VerifierSpec

KEY = "relay-secret"
R = "/darkmesh/relay"
BUILTINS = {"darkmesh-sdl.memory", "darkmesh-sdl.sqlite"}


class FakeVerifier:
    """Accepts ``Signature-Key: <sub>`` with capabilities from ``Signature``."""

    def ready(self) -> bool:
        return True

    async def verify(self, request: InboundRequest, *, authorities: Sequence[str],
                     remember_once: Any) -> VerifiedAgent:
        sub = request.header("signature-key") or ""
        caps = frozenset((request.header("signature") or "").split(","))
        node_id = sub.split("darkmesh-node@", 1)[1] if sub.startswith("darkmesh-node@") else None
        return VerifiedAgent(sub=sub, iss="test", thumbprint="t", public_jwk={},
                             algorithm="ed25519", label="fake", capabilities=caps,
                             node_id=node_id)

    def status(self) -> JSONObject:
        return {"fake": True}


class FakeAAuth:
    __name__ = "fake-aauth"

    @hookimpl
    def darkmesh_register_verifiers(self) -> Iterator[VerifierSpec]:
        yield VerifierSpec(name="fake", factory=lambda host, s: FakeVerifier(), scheme="aauth")


ALL_CAPS = ("relay.register,relay.list,relay.publish,relay.pull,relay.mailbox.send,"
            "relay.mailbox.read")


def signed(sub: str, caps: str = ALL_CAPS) -> dict[str, str]:
    return {"Signature-Key": sub, "Signature": caps, "Signature-Input": "sig=()"}


def node(node_id: str) -> dict[str, str]:
    return signed(f"darkmesh-node@{node_id}")


async def make_relay(tmp_path: Path, backend: str = "memory", **overrides: Any) -> RelayHost:
    pm = make_plugin_manager(only=BUILTINS, plugins=[FakeAAuth()])
    values: dict[str, Any] = {"key": SecretStr(KEY), "backend": backend, "data_dir": tmp_path,
                              "max_message_bytes": 4096, "max_body_bytes": 16384}
    values.update(overrides)
    relay = RelayHost(pm, RelaySettings(**values))
    await relay.start()
    return relay


@pytest_asyncio.fixture
async def relay(tmp_path: Path) -> AsyncIterator[RelayHost]:
    host = await make_relay(tmp_path)
    yield host
    await host.stop()


@pytest_asyncio.fixture
async def client(relay: RelayHost) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_relay_app(relay))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:9000") as c:
        yield c


def check(response: httpx.Response, model: type[BaseModel], status: int = 200) -> JSONObject:
    """Assert the status and that the body is exactly what ``model`` describes."""
    assert response.status_code == status, response.text
    data = response.json()
    model.model_validate(data)
    assert isinstance(data, dict)
    return data


def refused(response: httpx.Response, status: int, detail: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    m.ErrorResponse.model_validate(body)
    assert body["detail"] == detail


async def post(client: httpx.AsyncClient, path: str, body: JSONObject | None = None,
               **kwargs: Any) -> httpx.Response:
    payload = {"relay_key": KEY, **(body or {})}
    return await client.post(f"{R}/{path}", json=payload, **kwargs)


def v1_post(**overrides: Any) -> JSONObject:
    body: JSONObject = {"request_id": "3f9a0c1d", "requester_id": "node_a",
                        "requester_url": "http://localhost:8001/", "template": "warm_intro_v1",
                        "target": {"company": "Company X"}, "psi": {"x_values": ["1c"]},
                        "constraints": {"max_candidates": 3}, "response_token": "e4d2" * 8}
    body.update(overrides)
    return body


# ------------------------------------------------------------------ health, auth


@pytest.mark.asyncio
async def test_health_is_public_and_counts_after_purging(
    client: httpx.AsyncClient, relay: RelayHost
) -> None:
    data = check(await client.get(f"{R}/health"), m.HealthResponse)
    assert data["status"] == "ok" and data["nodes"] == 0 and data["posts"] == 0
    assert data["epoch"] == await relay.backend.epoch() and data["backend"] == "memory"
    await post(client, "posts", v1_post())
    await relay.backend.publish({"requester_id": "x", "template": "t", "request_id": "r"},
                                time.time() - 1)
    await post(client, "nodes/register", {"node_id": "node_b", "url": "http://b"})
    data = check(await client.get(f"{R}/health"), m.HealthResponse)
    assert data["posts"] == 1 and data["nodes"] == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["nodes/register", "posts", "posts/pull"])
async def test_post_routes_need_the_body_relay_key(client: httpx.AsyncClient, path: str) -> None:
    refused(await client.post(f"{R}/{path}", json={"node_id": "b"}), 403, "invalid relay_key")
    refused(await client.post(f"{R}/{path}", json={"relay_key": "wrong"}), 403,
            "invalid relay_key")
    # Headers are ignored on these routes (upstream).
    refused(await client.post(f"{R}/{path}", json={}, headers={"X-Darkmesh-Key": KEY}), 403,
            "invalid relay_key")
    refused(await client.post(f"{R}/{path}", content=b""), 403, "invalid relay_key")


@pytest.mark.asyncio
async def test_get_routes_take_the_key_in_a_header(client: httpx.AsyncClient) -> None:
    refused(await client.get(f"{R}/nodes"), 403, "invalid relay_key")
    refused(await client.get(f"{R}/nodes", headers={"X-Darkmesh-Key": "wrong"}), 403,
            "invalid relay_key")
    check(await client.get(f"{R}/nodes", headers={"X-Darkmesh-Key": KEY}), m.NodesResponse)
    check(await client.get(f"{R}/nodes", headers={"Authorization": f"Bearer {KEY}"}),
          m.NodesResponse)
    refused(await client.get(f"{R}/metrics"), 403, "invalid relay_key")


@pytest.mark.asyncio
async def test_body_parsing_errors_come_before_the_key_check(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{R}/posts", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("invalid JSON body: ")
    refused(await client.post(f"{R}/posts", content=b"[1, 2]"), 400,
            "request body must be a JSON object")
    refused(await client.post(f"{R}/posts/pull", content=b'"text"'), 400,
            "request body must be a JSON object")


@pytest.mark.asyncio
async def test_oversized_bodies_are_refused_with_413(client: httpx.AsyncClient) -> None:
    big = {"relay_key": KEY, "node_id": "b", "padding": "x" * 20000}
    response = await client.post(f"{R}/posts/pull", json=big)
    assert response.status_code == 413
    assert response.json()["detail"] == "request body exceeds 16384 bytes"


@pytest.mark.asyncio
async def test_unknown_route_and_wrong_method_answer_json(client: httpx.AsyncClient) -> None:
    refused(await client.get(f"{R}/nothing"), 404, "Not Found")
    response = await client.get(f"{R}/posts")
    assert response.status_code == 405
    assert "detail" in response.json()


# ---------------------------------------------------------------------- register


@pytest.mark.asyncio
async def test_register_trims_and_defaults_capabilities(client: httpx.AsyncClient) -> None:
    data = check(await post(client, "nodes/register",
                            {"node_id": " node_b ", "url": " http://localhost:8002/ "}),
                 m.RegisterResponse)
    assert data["node"]["node_id"] == "node_b"
    assert data["node"]["url"] == "http://localhost:8002"
    assert data["node"]["capabilities"] == ["warm_intro_v1"]
    again = check(await post(client, "nodes/register",
                             {"node_id": "node_b", "url": "http://b2", "capabilities": []}),
                  m.RegisterResponse)
    assert again["node"]["capabilities"] == []
    nodes = check(await client.get(f"{R}/nodes", headers={"X-Darkmesh-Key": KEY}),
                  m.NodesResponse)
    assert [n["url"] for n in nodes["nodes"]] == ["http://b2"]


@pytest.mark.asyncio
@pytest.mark.parametrize("body", [
    {}, {"node_id": "b"}, {"url": "http://b"}, {"node_id": "  ", "url": "http://b"},
    {"node_id": 5, "url": "http://b"}, {"node_id": "b", "url": ["x"]},
])
async def test_register_requires_node_id_and_url(
    client: httpx.AsyncClient, body: JSONObject
) -> None:
    refused(await post(client, "nodes/register", body), 400, "node_id and url are required")


@pytest.mark.asyncio
@pytest.mark.parametrize("field,value,detail", [
    ("capabilities", "warm_intro_v1",
     "capabilities must be a list of at most 64 non-empty strings"),
    ("capabilities", [1], "capabilities must be a list of at most 64 non-empty strings"),
    ("capabilities", [f"t{i}" for i in range(65)],
     "capabilities must be a list of at most 64 non-empty strings"),
    ("aliases", "p-1", "aliases must be a list of at most 256 non-empty strings"),
    ("aliases", [""], "aliases must be a list of at most 256 non-empty strings"),
    ("aliases", [f"p{i}" for i in range(257)],
     "aliases must be a list of at most 256 non-empty strings"),
    ("aliases", ["p" * 300], "aliases is longer than 256 characters"),
    ("node_id", "n" * 300, "node_id is longer than 256 characters"),
])
async def test_register_refuses_bad_fields(
    client: httpx.AsyncClient, field: str, value: Any, detail: str
) -> None:
    body = {"node_id": "node_b", "url": "http://b", field: value}
    refused(await post(client, "nodes/register", body), 400, detail)


@pytest.mark.asyncio
async def test_aliases_of_another_node_cannot_be_taken(client: httpx.AsyncClient) -> None:
    check(await post(client, "nodes/register",
                     {"node_id": "node_a", "url": "http://a", "aliases": ["p-a"]}),
          m.RegisterResponse)
    for alias in ("p-a", "node_a"):
        refused(await post(client, "nodes/register",
                           {"node_id": "node_b", "url": "http://b", "aliases": [alias]}),
                409, f"alias '{alias}' is already registered")
    # The owner may re-register its own alias.
    check(await post(client, "nodes/register",
                     {"node_id": "node_a", "url": "http://a", "aliases": ["p-a", "p-a2"]}),
          m.RegisterResponse)
    listing = await client.get(f"{R}/nodes", headers={"X-Darkmesh-Key": KEY})
    assert "p-a" not in listing.text


# -------------------------------------------------------------------------- posts


@pytest.mark.asyncio
async def test_publish_stores_the_upstream_shape(client: httpx.AsyncClient) -> None:
    answer = check(await post(client, "posts", v1_post(ttl_seconds=60)), m.PublishResponse)
    assert answer["seq"] == 1 and answer["live_nodes"] == 0
    pulled = check(await post(client, "posts/pull", {"node_id": "node_b"}), m.PullResponse)
    stored = pulled["posts"][0]
    assert list(stored) == ["seq", "post_id", "request_id", "requester_id", "requester_url",
                            "template", "target", "psi", "constraints", "response_token",
                            "created_at", "expires_at"]
    assert stored["requester_url"] == "http://localhost:8001"
    assert stored["post_id"] == answer["post_id"]
    assert stored["expires_at"] == answer["expires_at"]
    assert abs(stored["expires_at"] - stored["created_at"] - 60) < 1e-6
    assert "relay_key" not in stored and "ttl_seconds" not in stored


@pytest.mark.asyncio
@pytest.mark.parametrize("missing", ["request_id", "requester_id", "requester_url", "template"])
async def test_v1_publish_requires_upstream_fields(client: httpx.AsyncClient, missing: str) -> None:
    refused(await post(client, "posts", v1_post(**{missing: "  "})), 400,
            "request_id, requester_id, requester_url, and template are required")


@pytest.mark.asyncio
async def test_v1_publish_requires_a_response_token(client: httpx.AsyncClient) -> None:
    body = v1_post()
    del body["response_token"]
    refused(await post(client, "posts", body), 400, "response_token is required")


@pytest.mark.asyncio
async def test_v2_posts_need_no_url_or_token(client: httpx.AsyncClient) -> None:
    body = {"request_id": "r2", "requester_id": "node_a", "template": "warm_intro_v2",
            "psi": {"blinded": ["AA"]}}
    check(await post(client, "posts", body), m.PublishResponse)
    pulled = check(await post(client, "posts/pull",
                              {"node_id": "node_b", "capabilities": ["warm_intro_v2"]}),
                   m.PullResponse)
    stored = pulled["posts"][0]
    assert "requester_url" not in stored and "response_token" not in stored
    refused(await post(client, "posts", {"template": "warm_intro_v2", "requester_id": "a"}),
            400, "request_id, requester_id, and template are required")


@pytest.mark.asyncio
async def test_publish_answers_live_nodes_serving_the_template(client: httpx.AsyncClient) -> None:
    for node_id, caps in (("node_a", ["warm_intro_v2"]), ("node_b", ["warm_intro_v2"]),
                          ("node_c", ["warm_intro_v1"])):
        await post(client, "nodes/register",
                   {"node_id": node_id, "url": f"http://{node_id}", "capabilities": caps})
    await post(client, "posts/pull", {"node_id": "node_d", "capabilities": ["warm_intro_v2"]})
    body = {"request_id": "r", "requester_id": "node_a", "template": "warm_intro_v2"}
    answer = check(await post(client, "posts", body), m.PublishResponse)
    assert answer["live_nodes"] == 2  # node_b registered, node_d pulled; not node_a itself


@pytest.mark.asyncio
@pytest.mark.parametrize("ttl,expected", [(1, 5), (0, 5), (-50, 5), (1000, 300), (45, 45),
                                          ("60", 60), (12.9, 12)])
async def test_ttl_is_clamped_like_upstream(
    client: httpx.AsyncClient, ttl: Any, expected: int
) -> None:
    before = time.time()
    answer = check(await post(client, "posts", v1_post(ttl_seconds=ttl)), m.PublishResponse)
    assert before + expected - 1 < answer["expires_at"] < time.time() + expected + 1


@pytest.mark.asyncio
@pytest.mark.parametrize("ttl,detail", [
    ("soon", "ttl_seconds must be an integer"), (True, "ttl_seconds must be an integer"),
    ([30], "ttl_seconds must be an integer"), (10**30, "ttl_seconds is out of range"),
])
async def test_bad_ttl_is_a_400(client: httpx.AsyncClient, ttl: Any, detail: str) -> None:
    refused(await post(client, "posts", v1_post(ttl_seconds=ttl)), 400, detail)


@pytest.mark.asyncio
async def test_non_finite_numbers_are_a_400(client: httpx.AsyncClient) -> None:
    # Python's json module would read Infinity and NaN; the relay refuses them as JSON.
    raw = json.dumps(v1_post(relay_key=KEY))[:-1] + ', "ttl_seconds": Infinity}'
    for path, content in (("posts", raw),
                          ("posts/pull", f'{{"relay_key": "{KEY}", "node_id": "b", "wait": NaN}}')):
        response = await client.post(f"{R}/{path}", content=content)
        assert response.status_code == 400
        assert response.json()["detail"].startswith("invalid JSON body: ")


@pytest.mark.asyncio
@pytest.mark.parametrize("field", ["target", "psi", "constraints"])
async def test_post_objects_must_be_objects(client: httpx.AsyncClient, field: str) -> None:
    refused(await post(client, "posts", v1_post(**{field: ["x"]})), 400,
            f"{field} must be a JSON object")


@pytest.mark.asyncio
async def test_a_post_over_the_message_cap_is_a_413(client: httpx.AsyncClient) -> None:
    body = v1_post(psi={"x_values": ["ab" * 2100]})
    refused(await post(client, "posts", body), 413, "post exceeds 4096 bytes")


# --------------------------------------------------------------------------- pull


@pytest.mark.asyncio
async def test_pull_selection_over_http(client: httpx.AsyncClient, relay: RelayHost) -> None:
    await post(client, "posts", v1_post(requester_id="node_b"))
    await post(client, "posts", v1_post(template="warm_intro_v2"))
    await post(client, "posts", v1_post(request_id="wanted"))
    data = check(await post(client, "posts/pull", {"node_id": "node_b"}), m.PullResponse)
    assert [p["request_id"] for p in data["posts"]] == ["wanted"]
    assert data["cursor"] == 3 and data["node_id"] == "node_b"
    assert data["epoch"] == await relay.backend.epoch()
    data = check(await post(client, "posts/pull", {"node_id": "node_b", "cursor": 3}),
                 m.PullResponse)
    assert data["posts"] == [] and data["cursor"] == 3


@pytest.mark.asyncio
async def test_pull_limit_is_clamped(client: httpx.AsyncClient) -> None:
    for i in range(3):
        await post(client, "posts", v1_post(request_id=f"r{i}"))
    zero = check(await post(client, "posts/pull", {"node_id": "b", "limit": 0}), m.PullResponse)
    assert len(zero["posts"]) == 1 and zero["cursor"] == 1
    many = check(await post(client, "posts/pull", {"node_id": "b", "limit": 10**6}),
                 m.PullResponse)
    assert len(many["posts"]) == 3


@pytest.mark.asyncio
@pytest.mark.parametrize("body,detail", [
    ({}, "node_id is required"),
    ({"node_id": ""}, "node_id is required"),
    ({"node_id": ["b"]}, "node_id is required"),
    ({"node_id": "b", "cursor": "x"}, "cursor must be an integer"),
    ({"node_id": "b", "cursor": -1}, "cursor must be a non-negative integer"),
    ({"node_id": "b", "cursor": {}}, "cursor must be an integer"),
    ({"node_id": "b", "cursor": 2**60}, "cursor is out of range"),
    ({"node_id": "b", "limit": "many"}, "limit must be an integer"),
    ({"node_id": "b", "limit": False}, "limit must be an integer"),
    ({"node_id": "b", "wait": -1}, "wait must be between 0 and 30 seconds"),
    ({"node_id": "b", "wait": 31}, "wait must be between 0 and 30 seconds"),
    ({"node_id": "b", "wait": "5"}, "wait must be a number of seconds"),
    ({"node_id": "b", "capabilities": "warm_intro_v1"},
     "capabilities must be a list of at most 64 non-empty strings"),
])
async def test_pull_refuses_bad_fields(
    client: httpx.AsyncClient, body: JSONObject, detail: str
) -> None:
    refused(await post(client, "posts/pull", body), 400, detail)


@pytest.mark.asyncio
async def test_long_poll_over_http_returns_on_publish(client: httpx.AsyncClient) -> None:
    async def publish_later() -> float:
        await asyncio.sleep(0.2)
        stamp = time.monotonic()
        await post(client, "posts", v1_post())
        return stamp

    task = asyncio.create_task(publish_later())
    data = check(await post(client, "posts/pull", {"node_id": "node_b", "wait": 20}),
                 m.PullResponse)
    returned = time.monotonic()
    published = await task
    assert len(data["posts"]) == 1
    assert returned - published < 5  # woken by the publish, not by its 20 s wait


# ----------------------------------------------------------------------- mailboxes


def mail(to: str = "node_b", payload: bytes = b"sealed", **extra: Any) -> JSONObject:
    body: JSONObject = {"to": to, "from": "node_a", "request_id": "r1",
                        "payload": base64.b64encode(payload).decode()}
    body.update(extra)
    return body


async def register(client: httpx.AsyncClient, node_id: str, aliases: Sequence[str] = ()) -> None:
    check(await post(client, "nodes/register",
                     {"node_id": node_id, "url": f"http://{node_id}", "aliases": list(aliases)}),
          m.RegisterResponse)


@pytest.mark.asyncio
async def test_mailbox_send_pull_ack_in_shared_key_mode(client: httpx.AsyncClient) -> None:
    await register(client, "node_b", ["pseudo-b"])
    sent = check(await post(client, "mailbox/send", mail(to="pseudo-b")), m.MailboxSendResponse)
    assert "node_b" not in json.dumps(sent)  # the alias mapping is never disclosed
    # The mailbox routes also take the key in a header.
    headers = {"X-Darkmesh-Key": KEY}
    pulled = check(await client.post(f"{R}/mailbox/pull", json={"node_id": "node_b"},
                                     headers=headers), m.MailboxPullResponse)
    [message] = pulled["messages"]
    assert message["id"] == sent["id"]
    assert message["from"] == "node_a" and message["from_verified"] is False
    assert base64.b64decode(message["payload"]) == b"sealed"
    again = check(await post(client, "mailbox/pull", {"node_id": "node_b"}), m.MailboxPullResponse)
    assert [x["id"] for x in again["messages"]] == [sent["id"]]  # redelivered until acked
    acked = check(await post(client, "mailbox/ack", {"node_id": "node_b", "ids": [sent["id"]]}),
                  m.MailboxAckResponse)
    assert acked["acked"] == 1
    empty = check(await post(client, "mailbox/pull", {"node_id": "node_b"}), m.MailboxPullResponse)
    assert empty["messages"] == []


@pytest.mark.asyncio
async def test_mailbox_routes_need_a_key(client: httpx.AsyncClient) -> None:
    for path in ("mailbox/send", "mailbox/pull", "mailbox/ack"):
        refused(await client.post(f"{R}/{path}", json={"node_id": "b"}), 403, "invalid relay_key")


@pytest.mark.asyncio
@pytest.mark.parametrize("body,status,detail", [
    ({"to": "node_b", "request_id": "r1"}, 400, "to, request_id and payload are required"),
    ({"from": "node_a", "request_id": "r1", "payload": "AA=="}, 400,
     "to, request_id and payload are required"),
    ({"to": "node_b", "request_id": "r1", "payload": "AA=="}, 400, "from is required"),
    ({**mail(), "payload": "not base64!"}, 400, "payload must be standard base64"),
    ({**mail(), "payload": base64.b64encode(b"x" * 5000).decode()}, 413,
     "payload exceeds 4096 bytes"),
    (mail(to="nobody"), 404, "recipient 'nobody' is not registered"),
    (mail(request_id=7), 400, "to, request_id and payload are required"),
])
async def test_mailbox_send_refusals(
    client: httpx.AsyncClient, body: JSONObject, status: int, detail: str
) -> None:
    await register(client, "node_b")
    refused(await post(client, "mailbox/send", body), status, detail)


@pytest.mark.asyncio
@pytest.mark.parametrize("path,body,detail", [
    ("mailbox/pull", {}, "node_id is required"),
    ("mailbox/pull", {"node_id": "b", "wait": 99}, "wait must be between 0 and 30 seconds"),
    ("mailbox/pull", {"node_id": "b", "limit": "x"}, "limit must be an integer"),
    ("mailbox/ack", {"node_id": "b"}, "ids must be a list of at most 1000 message ids"),
    ("mailbox/ack", {"node_id": "b", "ids": "abc"},
     "ids must be a list of at most 1000 message ids"),
    ("mailbox/ack", {"node_id": "b", "ids": [1]}, "ids must be a list of at most 1000 message ids"),
    ("mailbox/ack", {"node_id": "b", "ids": ["a"] * 1001},
     "ids must be a list of at most 1000 message ids"),
    ("mailbox/ack", {"ids": ["a"]}, "node_id is required"),
])
async def test_mailbox_read_refusals(
    client: httpx.AsyncClient, path: str, body: JSONObject, detail: str
) -> None:
    refused(await post(client, path, body), 400, detail)


@pytest.mark.asyncio
async def test_mailbox_long_poll_over_http(client: httpx.AsyncClient) -> None:
    await register(client, "node_b")

    async def send_later() -> None:
        await asyncio.sleep(0.2)
        await post(client, "mailbox/send", mail())

    task = asyncio.create_task(send_later())
    started = time.monotonic()
    pulled = check(await post(client, "mailbox/pull", {"node_id": "node_b", "wait": 20}),
                   m.MailboxPullResponse)
    await task
    assert len(pulled["messages"]) == 1
    assert time.monotonic() - started < 5  # woken by the message, not by its 20 s wait


# ---------------------------------------------------------------- signed callers


@pytest.mark.asyncio
async def test_signed_calls_need_no_shared_key_and_bind_node_ids(client: httpx.AsyncClient) -> None:
    ok = await client.post(f"{R}/nodes/register", json={"node_id": "node_a", "url": "http://a"},
                           headers=node("node_a"))
    check(ok, m.RegisterResponse)
    refused(await client.post(f"{R}/nodes/register", json={"node_id": "node_b", "url": "http://b"},
                              headers=node("node_a")),
            403, "AAuth sub 'darkmesh-node@node_a' does not match node_id 'node_b'")
    refused(await client.post(f"{R}/posts", json=v1_post(requester_id="node_b"),
                              headers=node("node_a")),
            403, "AAuth sub 'darkmesh-node@node_a' does not match requester_id 'node_b'")
    check(await client.post(f"{R}/posts", json=v1_post(), headers=node("node_a")),
          m.PublishResponse)
    refused(await client.post(f"{R}/posts/pull", json={"node_id": "node_b"},
                              headers=node("node_a")),
            403, "AAuth sub 'darkmesh-node@node_a' does not match node_id 'node_b'")
    check(await client.post(f"{R}/posts/pull", json={"node_id": "node_b"},
                            headers=node("node_b")), m.PullResponse)


@pytest.mark.asyncio
async def test_signed_register_cannot_take_aliases_for_someone_else(
    client: httpx.AsyncClient
) -> None:
    # Aliases are bound like node_id: only the signer's own registration carries them.
    refused(await client.post(f"{R}/nodes/register",
                              json={"node_id": "node_b", "url": "http://b", "aliases": ["p"]},
                              headers=node("node_a")),
            403, "AAuth sub 'darkmesh-node@node_a' does not match node_id 'node_b'")


@pytest.mark.asyncio
async def test_signed_mail_is_stamped_with_the_signer(client: httpx.AsyncClient) -> None:
    await register(client, "node_b")
    sent = await client.post(f"{R}/mailbox/send", json={**mail(), "from": "node_forged"},
                             headers=node("node_a"))
    check(sent, m.MailboxSendResponse)
    pulled = check(await client.post(f"{R}/mailbox/pull", json={"node_id": "node_b"},
                                     headers=node("node_b")), m.MailboxPullResponse)
    [message] = pulled["messages"]
    assert message["from"] == "node_a" and message["from_verified"] is True


@pytest.mark.asyncio
async def test_signed_mailbox_reads_are_owner_only(client: httpx.AsyncClient) -> None:
    for path, body in (("mailbox/pull", {"node_id": "node_b"}),
                       ("mailbox/ack", {"node_id": "node_b", "ids": ["x"]})):
        refused(await client.post(f"{R}/{path}", json=body, headers=node("node_a")),
                403, "AAuth sub 'darkmesh-node@node_a' does not own mailbox 'node_b'")


@pytest.mark.asyncio
async def test_signed_non_node_agents_cannot_send_mail(client: httpx.AsyncClient) -> None:
    await register(client, "node_b")
    refused(await client.post(f"{R}/mailbox/send", json=mail(),
                              headers=signed("darkmesh-operator@node_a")),
            403, "AAuth sub 'darkmesh-operator@node_a' is not a node and cannot send mail")


@pytest.mark.asyncio
async def test_signed_capability_is_checked(client: httpx.AsyncClient) -> None:
    refused(await client.post(f"{R}/posts", json=v1_post(),
                              headers=signed("darkmesh-node@node_a", "relay.pull")),
            403, "agent 'darkmesh-node@node_a' is not permitted to use capability "
            "'relay.publish'")


@pytest.mark.asyncio
async def test_signed_bodies_are_parsed_by_the_handler(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{R}/posts/pull", content=b"{", headers=node("node_a"))
    assert response.status_code == 400
    assert response.json()["detail"].startswith("invalid JSON body: ")
    refused(await client.post(f"{R}/posts/pull", content=b"[]", headers=node("node_a")), 400,
            "request body must be a JSON object")
    refused(await client.post(f"{R}/posts/pull", content=b"", headers=node("node_a")), 400,
            "node_id is required")


# ------------------------------------------------------------------ other routes


@pytest.mark.asyncio
async def test_metrics_are_prometheus_text(client: httpx.AsyncClient) -> None:
    await post(client, "posts", v1_post())
    response = await client.get(f"{R}/metrics", headers={"X-Darkmesh-Key": KEY})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'darkmesh_relay_posts_total{template="warm_intro_v1"} 1.0' in response.text
    assert "darkmesh_http_requests_total" in response.text


@pytest.mark.asyncio
async def test_backend_failure_is_a_503_not_a_500(tmp_path: Path) -> None:
    relay = await make_relay(tmp_path, backend="sqlite")
    try:
        await relay.backend._run(lambda conn: conn.execute("DROP TABLE posts"))  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=create_relay_app(relay))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost:9000") as c:
            response = await post(c, "posts", v1_post())
        assert response.status_code == 503
        assert response.json()["detail"].startswith("relay backend unavailable: sqlite")
    finally:
        await relay.stop()


@pytest.mark.asyncio
async def test_app_lifespan_starts_and_stops_the_relay(tmp_path: Path) -> None:
    pm = make_plugin_manager(only=BUILTINS)
    relay = RelayHost(pm, RelaySettings(key=SecretStr(KEY), backend="sqlite", data_dir=tmp_path))
    app = create_relay_app(relay)
    async with app.router.lifespan_context(app):
        assert relay.backend is not None
        assert await relay.backend.count_posts(time.time()) == 0
    with pytest.raises(Exception, match="not started"):
        await relay.backend.count_posts(time.time())


def test_every_route_declares_its_capability_and_models(tmp_path: Path) -> None:
    pm = make_plugin_manager(only=BUILTINS)
    specs = relay_route_specs(RelayHost(pm, RelaySettings(key=SecretStr(KEY), data_dir=tmp_path)))
    table = {(s.methods, s.path): s.capability for s in specs}
    assert table == {
        (("GET",), f"{R}/health"): "public",
        (("POST",), f"{R}/nodes/register"): "relay.register",
        (("GET",), f"{R}/nodes"): "relay.list",
        (("POST",), f"{R}/posts"): "relay.publish",
        (("POST",), f"{R}/posts/pull"): "relay.pull",
        (("POST",), f"{R}/mailbox/send"): "relay.mailbox.send",
        (("POST",), f"{R}/mailbox/pull"): "relay.mailbox.read",
        (("POST",), f"{R}/mailbox/ack"): "relay.mailbox.read",
        (("GET",), f"{R}/metrics"): "relay.list",
    }
    for spec in specs:
        if "POST" in spec.methods:
            assert spec.request_model is not None and spec.response_model is not None
    for model in m.RELAY_MODELS.values():
        assert model.model_json_schema()["type"] == "object"


# ---------------------------------------------------------------------- fuzzing

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
_field_names = st.sampled_from(["node_id", "url", "capabilities", "aliases", "cursor", "limit",
                                "wait", "request_id", "requester_id", "requester_url",
                                "template", "response_token", "target", "psi", "constraints",
                                "ttl_seconds", "to", "from", "payload", "ids"])
_bodies = st.dictionaries(_field_names, _json_values, max_size=8)
_paths = st.sampled_from(["nodes/register", "posts", "posts/pull", "mailbox/send",
                          "mailbox/pull", "mailbox/ack"])


@pytest.mark.asyncio
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=_paths, body=_bodies, sign=st.booleans())
async def test_hostile_bodies_never_cause_a_500(
    client: httpx.AsyncClient, path: str, body: JSONObject, sign: bool
) -> None:
    wait = body.get("wait")
    if isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait > 0:
        body["wait"] = 0  # a valid long-poll would only slow the examples down
    if sign:
        response = await client.post(f"{R}/{path}", json=body, headers=node("fuzz"))
    else:
        response = await client.post(f"{R}/{path}", json={**body, "relay_key": KEY})
    assert response.status_code < 500, response.text
    assert isinstance(response.json(), dict)
