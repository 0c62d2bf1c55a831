"""Each hook exercised through the host with temporary plugin classes.

(Hooks covered elsewhere: stores and capabilities in test_plugins.py, skills and signers
in test_node_app.py, connectors and commands in test_cli.py; the registry in
test_hooks_meta.py maps every hook to its tests.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sdl_core import (
    INTRO_REVEALED,
    CapabilitySpec,
    InboundRequest,
    IntroRevealed,
    RelayBackendSpec,
    RelayHost,
    RelaySettings,
    RouteSpec,
    SkillSpec,
    SubscriberSpec,
    TransportSpec,
    VerificationFailed,
    VerifiedAgent,
    VerifierSpec,
    hookimpl,
    make_plugin_manager,
)
from sdl_core.node_app import create_node_app
from sdl_core.settings import load_settings
from sdl_core.testing.host import TEST_NODE_KEY, make_host

# ------------------------------------------------------------------ verifiers


class HeaderVerifier:
    """Treats ``Signature-Key: <sub>`` as a verified signature (test double)."""

    def __init__(self) -> None:
        self.seen: list[InboundRequest] = []

    def ready(self) -> bool:
        return True

    async def verify(self, request: InboundRequest, *, authorities: Sequence[str],
                     remember_once: Any) -> VerifiedAgent:
        self.seen.append(request)
        sub = request.header("signature-key") or ""
        if not sub.startswith("darkmesh-operator@"):
            raise VerificationFailed("unknown_thumbprint", error="invalid_key")
        return VerifiedAgent(sub=sub, iss="", thumbprint="t", public_jwk={}, algorithm="none",
                             label="test", capabilities=frozenset({"node.query"}), node_id=None)

    def status(self) -> dict[str, Any]:
        return {"requests": len(self.seen)}


class VerifierPlugin:
    __name__ = "verifier-plugin"

    def __init__(self) -> None:
        self.verifier = HeaderVerifier()

    @hookimpl
    def darkmesh_register_verifiers(self) -> Iterator[VerifierSpec]:
        yield VerifierSpec(name="header", scheme="aauth",
                           factory=lambda host, settings: self.verifier)


@pytest.mark.asyncio
async def test_verifier_decides_signed_requests_and_capabilities() -> None:
    plugin = VerifierPlugin()
    host = make_host(plugin, auth_mode="either")
    app = create_node_app(host)
    await host.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://node") as c:
        allowed = await c.get("/darkmesh/capabilities?x=1",
                              headers={"Signature-Key": "darkmesh-operator@test-node"})
        denied = await c.post("/darkmesh/ingest", json={"dataset": "contacts", "records": []},
                              headers={"Signature-Key": "darkmesh-operator@test-node"})
        refused = await c.get("/darkmesh/capabilities", headers={"Signature-Key": "mallory"})
        # Signed means signed only: a valid shared key next to a bad signature fails.
        no_fallback = await c.get("/darkmesh/capabilities",
                                  headers={"Signature-Key": "mallory",
                                           "X-Darkmesh-Key": TEST_NODE_KEY})
        status = (await c.get("/darkmesh/integrations/status",
                              headers={"X-Darkmesh-Key": TEST_NODE_KEY})).json()
    await host.stop()
    assert allowed.status_code == 200
    assert plugin.verifier.seen[0].query == "x=1"
    assert denied.status_code == 403
    assert denied.json()["detail"] == ("agent 'darkmesh-operator@test-node' is not permitted "
                                       "to use capability 'node.ingest'")
    assert refused.status_code == 401
    assert refused.json()["detail"] == "AAuth verification failed: unknown_thumbprint"
    assert refused.headers["signature-error"] == "error=invalid_key"
    assert no_fallback.status_code == 401
    assert status["plugins"]["verifier"] == {"requests": 4}


@pytest.mark.asyncio
async def test_without_verifier_signed_requests_get_503_in_either_mode() -> None:
    host = make_host(auth_mode="either")
    app = create_node_app(host)
    await host.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://node") as c:
        r = await c.get("/darkmesh/capabilities", headers={"Signature-Input": "sig=()"})
    await host.stop()
    assert r.status_code == 503
    assert r.json()["detail"] == "AAuth not available: no verifier installed"


# ----------------------------------------------------------------- transports


class PigeonTransportPlugin:
    __name__ = "pigeon-transport"

    @hookimpl
    def darkmesh_register_transports(self) -> Iterator[TransportSpec]:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json={"via": "pigeon", "path": request.url.path})

        yield TransportSpec(name="pigeon",
                            factory=lambda host, settings: httpx.MockTransport(handler))


@pytest.mark.asyncio
async def test_transport_setting_selects_the_registered_transport() -> None:
    host = make_host(PigeonTransportPlugin(), transport="pigeon")
    host.prepare()
    async with host.http_client(base_url="http://peer.example") as client:
        answer = await client.get("/darkmesh/health")
    await host.stop()
    assert answer.json() == {"via": "pigeon", "path": "/darkmesh/health"}


def test_unknown_transport_lists_the_choices() -> None:
    host = make_host(PigeonTransportPlugin(), transport="carrier")
    with pytest.raises(Exception, match=r"transport 'carrier' \(DARKMESH_TRANSPORT\) is not "
                                        r"installed; choose one of: http, pigeon"):
        host.prepare()


# ---------------------------------------------------------------- subscribers


def _revealed() -> IntroRevealed:
    return IntroRevealed(
        node_id="node_a", side="requester", template="warm_intro_v2", request_id="r1",
        consent_id="c1", requester_node_id="node_a", responder_node_id="node_b",
        target={"company": "CompanyX", "role": "VP Sales"},  # type: ignore[arg-type]
        contact={"name": "Taylor", "org": "CompanyX", "role": "VP Sales"},  # type: ignore[arg-type]
        relationship_strength=0.9, revealed_at="2026-01-01T00:00:00Z",
    )


@pytest.mark.asyncio
async def test_subscribers_receive_events_and_failures_do_not_propagate() -> None:
    received: list[IntroRevealed] = []

    class SubscriberPlugin:
        __name__ = "subscriber-plugin"

        @hookimpl
        def darkmesh_register_subscribers(self) -> Iterator[SubscriberSpec]:
            async def record(event: IntroRevealed) -> None:
                received.append(event)

            async def explode(event: IntroRevealed) -> None:
                raise RuntimeError("writeback down")

            yield SubscriberSpec(name="record", event=INTRO_REVEALED,
                                 factory=lambda host, settings: record)
            yield SubscriberSpec(name="explode", event=INTRO_REVEALED,
                                 factory=lambda host, settings: explode)

    host = make_host(SubscriberPlugin())
    await host.start()
    await host.events.emit(INTRO_REVEALED, _revealed())  # must not raise
    await host.stop()
    assert [e.request_id for e in received] == ["r1"]
    assert host.events.failures == 1


# ------------------------------------------------------------- relay backends


@pytest.mark.asyncio
async def test_relay_backend_setting_selects_the_registered_backend() -> None:
    lifecycle: list[str] = []

    def build(relay: Any, settings: Any) -> Any:
        from sdl_core.relay.memory_backend import MemoryRelayBackend

        class Tracked(MemoryRelayBackend):
            async def start(self) -> None:
                lifecycle.append("start")
                await super().start()

            async def close(self) -> None:
                lifecycle.append("close")
                await super().close()

        return Tracked()

    class BackendPlugin:
        __name__ = "backend-plugin"

        @hookimpl
        def darkmesh_register_relay_backends(self) -> Iterator[RelayBackendSpec]:
            yield RelayBackendSpec(name="tracked", factory=build)

    pm = make_plugin_manager(entry_points=False, plugins=[BackendPlugin()])
    settings = load_settings(RelaySettings, {}, overrides={"backend": "tracked",
                                                           "auth_mode": "hmac", "key": "k" * 8})
    relay = RelayHost(pm, settings)
    await relay.start()
    assert await relay.backend.remember_once("x", 10) is True
    await relay.stop()
    assert lifecycle == ["start", "close"]


# --------------------------------------------------------------- capabilities


async def _ok(request: Request) -> Response:
    return JSONResponse({"ok": True})


def test_declared_capability_is_accepted_on_a_skill_route() -> None:
    class Skill:
        def __init__(self, host: Any, settings: Any) -> None:
            pass

        def routes(self) -> list[RouteSpec]:
            return [RouteSpec(path="/ask", endpoint=_ok, capability="ping.ask")]

    class CapabilityPlugin:
        __name__ = "capability-plugin"

        @hookimpl
        def darkmesh_register_capabilities(self) -> Iterator[CapabilitySpec]:
            yield CapabilitySpec(name="ping.ask", owner="capability-plugin")

        @hookimpl
        def darkmesh_register_skills(self) -> Iterator[SkillSpec]:
            yield SkillSpec(name="ping", factory=Skill)

    host = make_host(CapabilityPlugin())
    app = create_node_app(host)
    assert "ping.ask" in host.capability_names()
    paths = [r.path for r in app.state.route_table]
    assert "/darkmesh/skills/ping/ask" in paths


# ------------------------------------------------------------------ lifecycle


@pytest.mark.asyncio
async def test_startup_and_shutdown_run_sync_and_async_in_order() -> None:
    calls: list[str] = []

    class First:
        __name__ = "first"

        @hookimpl
        def darkmesh_startup(self, host: Any) -> None:
            calls.append(f"first.startup:{host.settings.node_id}")

        @hookimpl
        def darkmesh_shutdown(self) -> None:  # a subset of the parameters
            calls.append("first.shutdown")

    class Second:
        __name__ = "second"

        @hookimpl
        def darkmesh_startup(self, host: Any) -> Any:
            async def later() -> None:
                await asyncio.sleep(0)
                calls.append(f"second.startup:{host.started}")

            return later()

        @hookimpl
        def darkmesh_shutdown(self, host: Any) -> Any:
            async def later() -> None:
                calls.append("second.shutdown")

            return later()

    host = make_host(First(), Second(), node_id="node_l")
    await host.start()
    await host.start()  # idempotent: hooks run once
    await host.stop()
    await host.stop()
    # pluggy runs last-registered first; shutdown runs in reverse.
    # Awaitables are awaited after every implementation was called (pluggy is sync).
    assert calls == ["first.startup:node_l", "second.startup:False",
                     "first.shutdown", "second.shutdown"]
