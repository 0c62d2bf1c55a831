"""Keys and peers (§10.1 item 5, DESIGN §11): the peer key goes only to configured peers
(or to message URLs when the operator opted in); signed calls carry no key; hostile
URLs are never called."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import httpx
import pytest
from darkmesh_warm_intro.v1.outbound import CallRefused, clean_base_url, plan_call
from darkmesh_warm_intro.v1.testing import (
    PREFIX,
    SHARED_KEY,
    Mesh,
    mesh,
    post_body,
    url_of,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sdl_core.settings import PeerConfig

EVIL = "http://evil.test"


def evil_app() -> Starlette:
    async def anything(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "received": 1})

    return Starlette(routes=[Route("/{path:path}", anything, methods=["POST", "GET"])])


def post_to(requester_url: Any, request_id: str = "req-1") -> dict[str, Any]:
    body, _ = post_body(request_id)
    return {**body, "requester_url": requester_url, "response_token": "tok",
            "template": "warm_intro_v1"}


class FakeSignature(httpx.Auth):
    """Stands in for the AAuth signer: marks requests as signed."""

    requires_request_body = True

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Signature-Input"] = 'sig=("@method");created=1'
        request.headers["Signature"] = "sig=:AAAA:"
        request.headers["Signature-Key"] = "sig=jwt;jwt=x"
        yield request


class FakeSigner:
    def has_role(self, role: str) -> bool:
        return role == "node"

    def auth(self, role: str = "node", *, authority: str | None = None,
             profile: str = "darkmesh") -> httpx.Auth:
        return FakeSignature()


@pytest.mark.asyncio
async def test_unconfigured_requester_url_gets_nothing_and_no_token_is_minted() -> None:
    async with mesh() as m:
        m.router.mount(EVIL, evil_app())
        b = await m.add_node("node_b")
        await b.v1.handle_post(post_to(EVIL))
        assert m.router.to(EVIL) == []
        assert b.v1.status()["reveal_tokens"] == 0


@pytest.mark.asyncio
async def test_trusting_message_urls_sends_the_peer_key_as_upstream_does() -> None:
    async with mesh() as m:
        m.router.mount(EVIL, evil_app())
        b = await m.add_node("node_b", warm={"v1_trust_message_urls": True})
        await b.v1.handle_post(post_to(EVIL + "/"))
        [call] = m.router.to(EVIL)
        assert call.url == f"{EVIL}{PREFIX}/inbox/req-1"
        assert call.headers["x-darkmesh-key"] == SHARED_KEY


@pytest.mark.asyncio
async def test_configured_peer_gets_the_peer_key_never_the_operator_key() -> None:
    async with mesh() as m:
        await m.add_node("node_a")
        b = await m.add_node("node_b", peers=["node_a"])
        await b.v1.handle_post(post_to(url_of("node_a")))
        [call] = m.router.to(f"{url_of('node_a')}{PREFIX}/inbox/")
        assert call.headers["x-darkmesh-key"] == SHARED_KEY
        # A's window is not open, so A answered 404: the token minted for it is dropped.
        assert b.v1.status()["reveal_tokens"] == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://evil.test", "javascript:alert(1)", "evil.test",
    "http://user:pw@evil.test", "http://evil.test:99999", "http://", "http://evil.test/?q=1",
    "http://evil.test/#x", "http://" + "a" * 3000 + ".test", 42, None, ["http://evil.test"],
])
async def test_hostile_requester_urls_are_never_called(url: Any) -> None:
    async with mesh() as m:
        m.router.mount(EVIL, evil_app())
        b = await m.add_node("node_b", warm={"v1_trust_message_urls": True})
        await b.v1.handle_post(post_to(url))
        assert [s for s in m.router.seen if "relay.test" not in s.url] == []
        assert b.v1.status()["reveal_tokens"] == 0


@pytest.mark.asyncio
async def test_signed_calls_go_anywhere_without_a_key() -> None:
    async with mesh() as m:
        m.router.mount(EVIL, evil_app())
        b = await m.add_node("node_b", auth_mode="either")
        b.host.signer = FakeSigner()
        await b.v1.handle_post(post_to(EVIL))
        [call] = m.router.to(EVIL)
        assert "signature" in call.headers and "signature-key" in call.headers
        assert "x-darkmesh-key" not in call.headers
        assert "authorization" not in call.headers


@pytest.mark.asyncio
async def test_consent_never_sends_the_key_to_an_answer_url() -> None:
    async with mesh() as m:
        m.router.mount(EVIL, evil_app())
        a = await m.add_node("node_a")  # no peers configured
        b = await m.add_node("node_b", warm={"v1_trust_message_urls": True})
        m.poll(b)
        async with a.operator(m.router) as client:
            answer = (await client.post(f"{PREFIX}/request", json={
                "target": {"company": "Company X"}})).json()
            [candidate] = answer["candidates"]
            r = await client.post(f"{PREFIX}/consent", json={
                "request_id": answer["request_id"], "consent_id": candidate["consent_id"]})
        assert r.status_code == 502
        assert r.json()["detail"].startswith(
            f"Reveal error: {url_of('node_b')} is not a configured peer")
        assert m.router.to(f"{url_of('node_b')}{PREFIX}/reveal") == []


async def _plan(m: Mesh, url: str, **node: Any) -> Any:
    n = await m.add_node(f"node_{len(m.nodes)}", data={}, **node)
    return plan_call(n.skill.ctx, url)


@pytest.mark.asyncio
async def test_plan_call_rules() -> None:
    async with mesh() as m:
        peers = ["node_b"]
        plan = await _plan(m, url_of("node_b"), peers=peers)
        assert plan.sign is False and plan.headers == {"X-Darkmesh-Key": SHARED_KEY}
        # Same origin, default port spelled out, case differences: still the peer.
        plan = await _plan(m, "HTTP://Node-B.test:80", peers=peers)
        assert plan.headers == {"X-Darkmesh-Key": SHARED_KEY}
        with pytest.raises(CallRefused, match="not a configured peer"):
            await _plan(m, "https://node-b.test", peers=peers)  # other scheme, other origin
        with pytest.raises(CallRefused):
            await _plan(m, "http://node-b.test:8080", peers=peers)
        # An empty peer key is never sent as an empty header.
        plan = await _plan(m, url_of("node_b"), peers=peers, peer_key="")
        assert plan.headers == {}


@pytest.mark.asyncio
async def test_peer_auth_setting_is_honoured() -> None:
    async with mesh() as m:
        n = await m.add_node("node_x", data={}, auth_mode="either", peers=[])
        n.host.settings.peers = [PeerConfig(node_id="hm", url="http://hm.test", auth="hmac"),
                                 PeerConfig(node_id="aa", url="http://aa.test", auth="aauth")]
        with pytest.raises(CallRefused, match="needs signed calls"):
            plan_call(n.skill.ctx, "http://aa.test")
        n.host.signer = FakeSigner()
        assert plan_call(n.skill.ctx, "http://aa.test").sign is True
        hm = plan_call(n.skill.ctx, "http://hm.test")
        assert hm.sign is False and hm.headers == {"X-Darkmesh-Key": SHARED_KEY}
        assert plan_call(n.skill.ctx, EVIL).sign is True


@pytest.mark.parametrize(("raw", "clean"), [
    ("http://a.test/", "http://a.test"),
    (" https://a.test:8443/base// ", "https://a.test:8443/base"),
    ("http://127.0.0.1:8001", "http://127.0.0.1:8001"),
    ("http://[::1]:8001", "http://[::1]:8001"),
    ("ftp://a.test", None),
    ("http://a b.test", None),
    ("http://a.test?x=1", None),
    ("", None),
])
def test_clean_base_url(raw: str, clean: str | None) -> None:
    assert clean_base_url(raw) == clean


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=10,
)
_post = st.fixed_dictionaries(
    {},
    optional={
        "request_id": _json | st.sampled_from(["r1", "../x", "a" * 200]),
        "requester_id": _json | st.just("node_a"),
        "requester_url": _json | st.sampled_from([EVIL, url_of("node_a"), "file:///x"]),
        "response_token": _json | st.just("tok"),
        "template": st.sampled_from(["warm_intro_v1", "warm_intro_v2"]) | _json,
        "target": _json | st.just({"company": "Company X"}),
        "psi": _json | st.fixed_dictionaries({"x_values": st.lists(
            st.sampled_from(["0", "1", "2", "ff", "zz", "FFFF"]) | _json, max_size=3)}),
    },
)


@pytest.mark.asyncio
async def test_hostile_posts_never_raise_and_never_reach_unconfigured_urls() -> None:
    async with mesh() as m:
        m.router.mount(EVIL, evil_app())
        await m.add_node("node_a")
        b = await m.add_node("node_b", peers=["node_a"])

        # Hypothesis drives sync functions: collect its examples, then feed them all to
        # the node on this event loop (no shrinking, but every failure names its post).
        posts: list[Any] = []

        @settings(max_examples=150, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(post=_post | _json)
        def collect(post: Any) -> None:
            posts.append(post)

        collect()
        for post in posts:
            await b.v1.handle_post(post)  # must never raise
        assert len(posts) >= 100
        assert m.router.to(EVIL) == []
        assert all(s.url.startswith(url_of("node_a")) for s in m.router.seen
                   if "relay.test" not in s.url)


def slow_or_big_app(kind: str) -> Starlette:
    import asyncio

    from starlette.responses import Response

    async def anything(request: Request) -> Response:
        if kind == "slow":
            await asyncio.sleep(20)
            return JSONResponse({"ok": True})
        if kind == "big":
            return Response(b"{" + b" " * (300 * 1024) + b"}", media_type="application/json")
        return Response(b"not json", media_type="text/plain")

    return Starlette(routes=[Route("/{path:path}", anything, methods=["POST"])])


@pytest.mark.asyncio
async def test_delivery_timeout_keeps_the_token_refusal_drops_it(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import time

    from darkmesh_warm_intro.v1 import outbound

    monkeypatch.setattr(outbound, "PEER_TIMEOUT_SECONDS", 0.2)
    async with mesh() as m:
        m.router.mount(EVIL, slow_or_big_app("slow"))
        b = await m.add_node("node_b", warm={"v1_trust_message_urls": True})
        started = time.monotonic()
        await b.v1.handle_post(post_to(EVIL))
        assert time.monotonic() - started < 5  # the 0.2 s deadline cut the 20 s answer
        assert "not delivered: timeout after 0.2s" in caplog.text
        # The requester may have received the answer: its token stays until it expires.
        assert b.v1.status()["reveal_tokens"] == 1
        m.router.mount(EVIL, slow_or_big_app("text"))  # a 200 that is not JSON: refused
        await b.v1.handle_post(post_to(EVIL, request_id="req-2"))
        assert b.v1.status()["reveal_tokens"] == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(("kind", "detail"), [
    ("big", "Reveal error: answer larger than 262144 bytes"),
    ("text", "Reveal error: answer is not JSON"),
])
async def test_consent_refuses_oversized_or_non_json_reveal_answers(kind: str,
                                                                   detail: str) -> None:
    from darkmesh_warm_intro.v1.keys import SESSION

    async with mesh() as m:
        a = await m.add_node("node_a", peers=[EVIL])
        b = await m.add_node("node_b", peers=["node_a"])
        m.poll(b)
        async with a.operator(m.router) as client:
            answer = (await client.post(f"{PREFIX}/request", json={
                "target": {"company": "Company X"}})).json()
            rid, cid = answer["request_id"], answer["candidates"][0]["consent_id"]
            session = a.skill.ctx.state.get(SESSION + rid)
            session["candidates"][cid]["responder_url"] = EVIL
            a.skill.ctx.state.put(SESSION + rid, session, ttl=60)
            m.router.mount(EVIL, slow_or_big_app(kind))
            r = await client.post(f"{PREFIX}/consent", json={"request_id": rid,
                                                               "consent_id": cid})
        assert (r.status_code, r.json()["detail"]) == (502, detail)
