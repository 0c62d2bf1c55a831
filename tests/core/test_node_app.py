"""The node app: every core endpoint's success and error paths, auth, mounting."""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import sdl_core.auth as auth_module
from sdl_core import PUBLIC, RouteSpec, SignerSpec, SkillSpec, StartupError, hookimpl
from sdl_core.node_app import create_node_app
from sdl_core.node_models import (
    CapabilitiesResponse,
    HealthResponse,
    IngestResponse,
    IntegrationsStatusResponse,
    NodeCard,
    PluginsResponse,
)
from sdl_core.testing.host import TEST_NODE_KEY, TEST_PEER_KEY, make_host
from sdl_core.testing.served import served_app

KEY = {"X-Darkmesh-Key": TEST_NODE_KEY}


class EchoSkill:
    """A minimal skill: one guarded route, one public route, a status block."""

    def __init__(self, host: Any, settings: Any) -> None:
        self.started = False

    async def echo(self, request: Request) -> Response:
        return JSONResponse({"echo": True, "skill_started": self.started})

    async def open_route(self, request: Request) -> Response:
        return JSONResponse({"open": True})

    def routes(self) -> list[RouteSpec]:
        return [
            RouteSpec(path="/echo", endpoint=self.echo, capability="node.query"),
            RouteSpec(path="/open", endpoint=self.open_route, capability=PUBLIC),
        ]

    async def handle_post(self, post: dict[str, Any]) -> None:
        return None

    async def handle_mailbox(self, message: Any) -> bool:
        return False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def status(self) -> dict[str, Any]:
        return {"echo": "fine"}


class EchoPlugin:
    __name__ = "echo-plugin"

    @hookimpl
    def darkmesh_register_skills(self) -> Iterator[SkillSpec]:
        yield SkillSpec(name="echo", factory=EchoSkill, templates=("echo_v1",),
                        datasets=("echo_notes",))


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    host = make_host(EchoPlugin(), node_id="node_a", ingest_max_records=5)
    app = create_node_app(host)
    await host.start()  # ASGITransport sends no lifespan events
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as c:
        yield c
    await host.stop()


# ------------------------------------------------------------------ read routes


@pytest.mark.asyncio
async def test_health_is_public_and_echoes_request_id(client: httpx.AsyncClient) -> None:
    r = await client.get("/darkmesh/health", headers={"X-Request-Id": "abc-123"})
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "node_id": "node_a"}
    HealthResponse.model_validate(r.json())
    assert r.headers["x-request-id"] == "abc-123"


@pytest.mark.asyncio
async def test_insane_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    r = await client.get("/darkmesh/health", headers={"X-Request-Id": "bad id\twith tab"})
    assert r.headers["x-request-id"] != "bad id\twith tab"
    assert len(r.headers["x-request-id"]) == 16


@pytest.mark.asyncio
async def test_capabilities_lists_skill_templates(client: httpx.AsyncClient) -> None:
    r = await client.get("/darkmesh/capabilities", headers=KEY)
    assert r.status_code == 200
    assert r.json() == {"node_id": "node_a", "capabilities": ["echo_v1"]}
    CapabilitiesResponse.model_validate(r.json())


@pytest.mark.asyncio
async def test_capabilities_setting_is_taken_as_given() -> None:
    host = make_host(EchoPlugin(), node_id="node_b", capabilities=["warm_intro_v1"])
    app = create_node_app(host)
    await host.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://node") as c:
        r = await c.get("/darkmesh/capabilities", headers=KEY)
    await host.stop()
    assert r.json()["capabilities"] == ["warm_intro_v1"]


@pytest.mark.asyncio
async def test_node_card_shape(client: httpx.AsyncClient) -> None:
    r = await client.get("/darkmesh/node/card", headers=KEY)
    assert r.status_code == 200
    assert r.json() == {
        "node_id": "node_a", "pseudonym_id": "node_a", "url": "http://localhost:8001",
        "capabilities": ["echo_v1"], "relay_url": "",
    }
    NodeCard.model_validate(r.json())


@pytest.mark.asyncio
async def test_integrations_status_follows_ingest(client: httpx.AsyncClient) -> None:
    before = (await client.get("/darkmesh/integrations/status", headers=KEY)).json()
    assert before["ready"] is False
    assert before["required_integrations"] == [
        {"name": "contacts", "records": 0, "ready": False},
        {"name": "interactions", "records": 0, "ready": False},
    ]
    assert before["plugins"]["skill:echo"] == {"echo": "fine"}
    await client.post("/darkmesh/ingest", headers=KEY,
                      json={"dataset": "contacts", "records": [{"email": "a@x.com"}]})
    await client.post("/darkmesh/ingest", headers=KEY,
                      json={"dataset": "interactions",
                            "records": [{"email": "a@x.com", "strength": 0.4}]})
    after = (await client.get("/darkmesh/integrations/status", headers=KEY)).json()
    IntegrationsStatusResponse.model_validate(after)
    assert after["ready"] is True
    assert [e["records"] for e in after["required_integrations"]] == [1, 1]


@pytest.mark.asyncio
async def test_plugins_lists_specs_and_builtin_marker(client: httpx.AsyncClient) -> None:
    r = await client.get("/darkmesh/plugins", headers=KEY)
    assert r.status_code == 200
    body = PluginsResponse.model_validate(r.json())
    by_name = {p.name: p for p in body.plugins}
    assert by_name["echo-plugin"].specs == {"skill": ["echo"]}
    assert by_name["echo-plugin"].builtin is False
    assert by_name["darkmesh-sdl.memory-store"].builtin is True
    assert by_name["darkmesh-sdl.memory-store"].specs == {"store": ["memory"]}
    assert body.specs["skill"] == ["echo"]
    assert body.specs["transport"] == ["http"]


@pytest.mark.asyncio
async def test_metrics_are_prometheus_text_with_store_latency(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/darkmesh/ingest", headers=KEY,
                      json={"dataset": "contacts", "records": [{"email": "a@x.com"}]})
    r = await client.get("/darkmesh/metrics", headers=KEY)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'darkmesh_store_latency_seconds_count{operation="upsert",store="memory"} 1.0' in text
    assert 'darkmesh_http_requests_total{route="ingest",status="200"} 1.0' in text


# ----------------------------------------------------------------------- ingest


@pytest.mark.asyncio
async def test_ingest_answers_total_count_and_upserts(client: httpx.AsyncClient) -> None:
    first = await client.post("/darkmesh/ingest", headers=KEY, json={
        "dataset": "contacts",
        "records": [{"email": "a@x.com", "name": "A"}, {"email": "b@x.com", "name": "B"}],
    })
    assert first.status_code == 200
    assert first.json() == {"dataset": "contacts", "count": 2}
    second = await client.post("/darkmesh/ingest", headers=KEY, json={
        "dataset": "contacts",
        "records": [{"email": "A@x.com", "name": "A2"}, {"email": "c@x.com"}],
        "unknown_field": "ignored",
    })
    assert second.json() == {"dataset": "contacts", "count": 3}
    IngestResponse.model_validate(second.json())


@pytest.mark.asyncio
async def test_ingest_clamps_strengths() -> None:
    host = make_host(node_id="node_a")
    app = create_node_app(host)
    await host.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://node") as c:
        r = await c.post("/darkmesh/ingest", headers=KEY, json={
            "dataset": "interactions",
            "records": [{"email": "hi@x.com", "strength": 7.5},
                        {"email": "lo@x.com", "strength": -2},
                        {"email": "ok@x.com", "strength": "0.25"},
                        {"email": "no@x.com"}],
        })
        assert r.status_code == 200
        stored = {rec["email"]: rec.get("strength")
                  async for rec in host.store.iterate("interactions")}
    await host.stop()
    assert stored == {"hi@x.com": 1.0, "lo@x.com": 0.0, "ok@x.com": 0.25, "no@x.com": None}


@pytest.mark.asyncio
async def test_ingest_accepts_skill_dataset_and_refuses_unknown(
    client: httpx.AsyncClient,
) -> None:
    ok = await client.post("/darkmesh/ingest", headers=KEY,
                           json={"dataset": "echo_notes", "records": [{"id": 1}]})
    assert ok.json() == {"dataset": "echo_notes", "count": 1}
    bad = await client.post("/darkmesh/ingest", headers=KEY,
                            json={"dataset": "debug_dump", "records": []})
    assert bad.status_code == 400
    assert bad.json()["reason"] == "unknown_dataset"
    assert "choose one of: contacts, echo_notes, interactions" in bad.json()["detail"]


@pytest.mark.asyncio
@pytest.mark.parametrize("body, loc", [
    ({"dataset": 5, "records": []}, ["body", "dataset"]),
    ({"dataset": "contacts", "records": {"email": "x"}}, ["body", "records"]),
    ({"dataset": "contacts", "records": [1, 2]}, ["body", "records", "0"]),
    ({"records": []}, ["body", "dataset"]),
])
async def test_ingest_wrong_types_are_422(
    client: httpx.AsyncClient, body: dict[str, Any], loc: list[str]
) -> None:
    r = await client.post("/darkmesh/ingest", headers=KEY, json=body)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail[0]["loc"] == loc


@pytest.mark.asyncio
@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"", b'{"dataset": NaN}'])
async def test_ingest_unparsable_body_is_422(client: httpx.AsyncClient, raw: bytes) -> None:
    r = await client.post("/darkmesh/ingest", headers={**KEY, "content-type": "application/json"},
                          content=raw)
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.asyncio
async def test_ingest_too_many_records_is_413(client: httpx.AsyncClient) -> None:
    r = await client.post("/darkmesh/ingest", headers=KEY, json={
        "dataset": "contacts", "records": [{"email": f"{i}@x.com"} for i in range(6)]})
    assert r.status_code == 413
    assert r.json()["reason"] == "too_many_records"
    assert "DARKMESH_INGEST_MAX_RECORDS" in r.json()["detail"]


@pytest.mark.asyncio
async def test_oversized_body_is_413_before_auth() -> None:
    host = make_host(node_id="node_a", max_body_bytes=2048)
    app = create_node_app(host)
    await host.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://node") as c:
        big = {"dataset": "contacts", "records": [{"email": "x" * 4000}]}
        r = await c.post("/darkmesh/ingest", headers=KEY, json=big)
        anonymous = await c.post("/darkmesh/ingest", json=big)
    await host.stop()
    assert r.status_code == 413
    assert r.json() == {"detail": "request body exceeds 2048 bytes", "reason": "body_too_large"}
    assert anonymous.status_code == 413


def test_ingest_never_answers_500_to_hostile_bodies() -> None:
    host = make_host(node_id="node_a")
    app = create_node_app(host)
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
        | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                    max_size=4),
        max_leaves=12,
    )
    bodies = st.one_of(
        json_values,
        st.fixed_dictionaries({"dataset": st.sampled_from(["contacts", "interactions", "x"])
                               | json_values,
                               "records": st.lists(json_values, max_size=4) | json_values}),
    )
    with served_app(app, health_path="/darkmesh/health") as url, \
            httpx.Client(base_url=url, timeout=10) as tc:

        @settings(max_examples=80, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(body=bodies)
        def check(body: Any) -> None:
            r = tc.post("/darkmesh/ingest", headers=KEY, content=json.dumps(body))
            assert 200 <= r.status_code < 500, r.text
            assert "detail" in r.json() or r.status_code == 200

        check()
    assert host.started is False  # the lifespan stopped it


# ------------------------------------------------------------------------- auth


@pytest.mark.asyncio
@pytest.mark.parametrize("headers", [
    {},
    {"X-Darkmesh-Key": "x" * len(TEST_NODE_KEY)},  # same length, wrong value
    {"X-Darkmesh-Key": TEST_PEER_KEY},  # the peer key never opens operator routes
    {"Authorization": f"Basic {TEST_NODE_KEY}"},
])
async def test_wrong_node_key_is_401(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    for path in ("/darkmesh/capabilities", "/darkmesh/node/card", "/darkmesh/plugins",
                 "/darkmesh/metrics", "/darkmesh/integrations/status",
                 "/darkmesh/skills/echo/echo"):
        r = await client.get(path, headers=headers)
        assert r.status_code == 401, path
        assert r.json()["detail"] == "invalid node key"
    r = await client.post("/darkmesh/ingest", headers=headers,
                          json={"dataset": "contacts", "records": []})
    assert r.status_code == 401


@pytest.mark.asyncio
async def test_bearer_form_and_header_precedence(client: httpx.AsyncClient) -> None:
    bearer = await client.get("/darkmesh/capabilities",
                              headers={"Authorization": f"bearer  {TEST_NODE_KEY} "})
    assert bearer.status_code == 200
    # A non-empty X-Darkmesh-Key wins over a correct bearer token (wire-v1 §2.1).
    wins = await client.get("/darkmesh/capabilities", headers={
        "X-Darkmesh-Key": "wrong", "Authorization": f"Bearer {TEST_NODE_KEY}"})
    assert wins.status_code == 401


def test_constant_time_equals_uses_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return bool(real(a, b))

    # sdl_core.auth calls hmac.compare_digest through the module, so the spy sees it.
    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert auth_module.constant_time_equals("secret-key", "secret-key") is True
    assert auth_module.constant_time_equals("secret-kez", "secret-key") is False
    assert calls == [(b"secret-key", b"secret-key"), (b"secret-kez", b"secret-key")]
    # An empty configured secret never matches, not even an empty one.
    assert auth_module.constant_time_equals("", "") is False


# ------------------------------------------------------------- routing, errors


@pytest.mark.asyncio
async def test_unknown_path_is_json_404_and_wrong_method_json_405(
    client: httpx.AsyncClient,
) -> None:
    missing = await client.get("/darkmesh/debug/dataset/contacts", headers=KEY)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not Found"}
    wrong = await client.post("/darkmesh/health")
    assert wrong.status_code == 405
    assert wrong.json() == {"detail": "Method Not Allowed"}


@pytest.mark.asyncio
async def test_skill_routes_are_mounted_and_guarded(client: httpx.AsyncClient) -> None:
    echo = await client.get("/darkmesh/skills/echo/echo", headers=KEY)
    assert echo.json() == {"echo": True, "skill_started": True}
    assert (await client.get("/darkmesh/skills/echo/open")).json() == {"open": True}


def _skill_plugin(route: RouteSpec) -> object:
    class BadSkill(EchoSkill):
        def routes(self) -> list[RouteSpec]:
            return [route]

    class BadPlugin:
        __name__ = "bad-plugin"

        @hookimpl
        def darkmesh_register_skills(self) -> Iterator[SkillSpec]:
            yield SkillSpec(name="bad", factory=BadSkill)

    return BadPlugin()


async def _noop(request: Request) -> Response:
    return JSONResponse({})


@pytest.mark.parametrize("capability, message", [
    ("", "skill:bad: route /darkmesh/skills/bad/x declares no capability"),
    ("node.everything",
     "skill:bad: route /darkmesh/skills/bad/x declares unknown capability 'node.everything'"),
])
def test_route_without_valid_capability_stops_startup(capability: str, message: str) -> None:
    host = make_host(_skill_plugin(RouteSpec(path="/x", endpoint=_noop, capability=capability)))
    with pytest.raises(StartupError) as info:
        create_node_app(host)
    assert message in str(info.value)


def test_route_served_twice_stops_startup() -> None:
    host = make_host(_skill_plugin(
        RouteSpec(path="/darkmesh/health", endpoint=_noop, capability=PUBLIC)))
    host.prepare()
    host.skills["bad"].routes = lambda: [  # type: ignore[method-assign]
        RouteSpec(path="/a", endpoint=_noop, capability=PUBLIC),
        RouteSpec(path="/a", endpoint=_noop, capability=PUBLIC),
    ]
    with pytest.raises(StartupError, match="GET /darkmesh/skills/bad/a is already served"):
        create_node_app(host)


class JwksSigner:
    def has_role(self, role: str) -> bool:
        return False

    async def jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "abc"}]})

    def routes(self) -> list[RouteSpec]:
        return [RouteSpec(path="/.well-known/jwks.json", endpoint=self.jwks, capability=PUBLIC)]


class JwksPlugin:
    __name__ = "jwks-plugin"

    @hookimpl
    def darkmesh_register_signers(self) -> Iterator[SignerSpec]:
        yield SignerSpec(name="jwks", factory=lambda host, settings: JwksSigner())


@pytest.mark.asyncio
async def test_signer_routes_are_mounted_at_their_absolute_path() -> None:
    host = make_host(JwksPlugin(), auth_mode="either")
    app = create_node_app(host)
    await host.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://node") as c:
        r = await c.get("/.well-known/jwks.json")
    await host.stop()
    assert r.status_code == 200
    assert r.json()["keys"][0]["crv"] == "Ed25519"


def test_lifespan_starts_and_stops_the_host() -> None:
    host = make_host(EchoPlugin())
    app = create_node_app(host)
    assert host.prepared and not host.started
    with served_app(app, health_path="/darkmesh/health") as url:
        assert host.started
        echo = httpx.get(f"{url}/darkmesh/skills/echo/echo", headers=KEY, timeout=10)
        assert echo.json()["skill_started"] is True
    assert not host.started


@pytest.mark.asyncio
async def test_status_counts_accepted_callers_by_scheme() -> None:
    """``spec/aauth.md`` §5.3 step 4: status shows who still uses a shared key."""
    host = make_host(node_id="node_count")
    app = create_node_app(host)
    await host.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://localhost:8001") as client:
            for _ in range(3):
                assert (await client.get("/darkmesh/capabilities", headers=KEY)).status_code == 200
            refused = await client.get("/darkmesh/capabilities", headers={"X-Darkmesh-Key": "no"})
            assert refused.status_code == 401
            status = (await client.get("/darkmesh/integrations/status", headers=KEY)).json()
    finally:
        await host.stop()
    auth = status["plugins"]["auth"]
    assert auth["mode"] == "hmac"
    # Three capability calls plus the status call itself; the refused one is not counted.
    assert auth["callers"] == [{"scheme": "shared-key", "caller": "key", "accepted": 4}]
