"""In-process v1 mesh for tests (the skill's ``test_v1_*`` suites and yours): a relay and
nodes wired through ``httpx.ASGITransport`` by base URL, no sockets.

Each node runs the real core node app (``create_node_app``: auth guard, route table) with a
minimal skill around :class:`V1Protocol`, so these tests depend only on the core and on
the v1 package. Pollers are explicit tasks (``Mesh.poll``) so tests decide who listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp

from darkmesh_warm_intro.context import WarmIntroContext
from darkmesh_warm_intro.settings import WarmIntroSettings
from darkmesh_warm_intro.v1 import V1Protocol
from sdl_core import (
    Host,
    IntroRevealed,
    RelayHost,
    RelaySettings,
    RouteSpec,
    SkillSpec,
    hookimpl,
    node_json,
    request_identity,
)
from sdl_core.node_app import create_node_app
from sdl_core.plugins import make_plugin_manager
from sdl_core.relay.app import create_relay_app
from sdl_core.settings import NodeSettings, load_settings

RELAY_URL = "http://relay.test"
SHARED_KEY = "demo-relay-key"  # upstream demo: relay key = node key
OPERATOR_KEY = "operator-key-a1b2c3"
# Generous: the machines running the suite are shared and PSI costs ~20 ms per value.
WAIT = 1.2

# spec/demo-data (wire-v1.md §9), as the CSV connector would ingest it.
DEMO: dict[str, dict[str, Any]] = {
    "node_a": {
        "self": ["founder@startup.com"],
        "contacts": [
            {"name": "Casey Connector", "email": "casey@connector.com", "org": "Connector LLC",
             "role": "Advisor", "strength": 0.85},
            {"name": "Blake Builder", "email": "blake@otherco.com", "org": "OtherCo",
             "role": "Engineer", "strength": 0.4},
        ],
        "interactions": [{"email": "casey@connector.com", "strength": 0.92},
                         {"email": "blake@otherco.com", "strength": 0.35}],
    },
    "node_b": {
        "self": ["casey@connector.com"],
        "contacts": [
            {"name": "Taylor BD", "email": "taylor@companyx.com", "org": "Company X",
             "role": "Business Development", "strength": 0.9},
            {"name": "Jordan Ops", "email": "jordan@companyy.com", "org": "Company Y",
             "role": "Operations", "strength": 0.6},
        ],
        "interactions": [{"email": "taylor@companyx.com", "strength": 0.88}],
    },
    "node_c": {
        "self": ["carol@elsewhere.com"],
        "contacts": [
            {"name": "Xavier X", "email": "xavier@companyx.com", "org": "Company X",
             "role": "Business Development Lead", "strength": 0.95},
        ],
        "interactions": [{"email": "xavier@companyx.com", "strength": 0.97}],
    },
}

BASE_REQUEST: dict[str, Any] = {
    "template": "warm_intro_v1",
    "target": {"company": "Company X", "role": "Business Development"},
    "constraints": {"max_candidates": 3, "min_strength": 0.5},
}


def url_of(node_id: str) -> str:
    return f"http://{node_id.replace('_', '-')}.test"


# --------------------------------------------------------------------------- transport


@dataclass
class Seen:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


class Router(httpx.AsyncBaseTransport):
    """Routes by origin to ASGI apps and records every request it carries."""

    def __init__(self) -> None:
        self.apps: dict[str, httpx.ASGITransport] = {}
        self.seen: list[Seen] = []

    def mount(self, base_url: str, app: ASGIApp) -> None:
        self.apps[base_url.rstrip("/")] = httpx.ASGITransport(app=app)

    def to(self, prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.url.startswith(prefix)]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
        body = await request.aread()
        self.seen.append(Seen(request.method, str(request.url),
                              {k.lower(): v for k, v in request.headers.items()}, body))
        transport = self.apps.get(origin)
        if transport is None:
            raise httpx.ConnectError(f"no route to {origin}", request=request)
        return await transport.handle_async_request(request)


# ------------------------------------------------------------------------ test skill


class V1OnlySkill:
    """The smallest skill around V1Protocol: its routes plus the two operator routes."""

    def __init__(self, host: Any, settings: Any) -> None:
        self.ctx = WarmIntroContext.create(host, settings)
        self.v1 = V1Protocol(self.ctx)

    def routes(self) -> list[RouteSpec]:
        async def request_route(request: Request) -> JSONResponse:
            body = node_json(request)
            return JSONResponse(await self.v1.request(body, request_identity(request)))

        async def consent_route(request: Request) -> JSONResponse:
            body = node_json(request)
            return JSONResponse(
                await self.v1.consent(str(body.get("request_id")), str(body.get("consent_id")))
            )

        return [
            RouteSpec(path="/request", endpoint=request_route, methods=("POST",),
                      capability="node.query"),
            RouteSpec(path="/consent", endpoint=consent_route, methods=("POST",),
                      capability="node.consent"),
            *self.v1.routes(),
        ]

    async def handle_post(self, post: dict[str, Any]) -> None:
        await self.v1.handle_post(post)

    async def handle_mailbox(self, message: Any) -> bool:
        return False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return self.v1.status()


class V1OnlyPlugin:
    __name__ = "v1-only-warm-intro"

    @hookimpl
    def darkmesh_register_skills(self) -> Iterator[SkillSpec]:
        yield SkillSpec(name="warm-intro", factory=V1OnlySkill, settings=WarmIntroSettings,
                        templates=("warm_intro_v1",), datasets=("contacts", "interactions"))


# ---------------------------------------------------------------------------- nodes


class Recorder:
    """An ``intro.revealed`` subscriber."""

    def __init__(self) -> None:
        self.events: list[IntroRevealed] = []

    async def __call__(self, event: IntroRevealed) -> None:
        self.events.append(event)


@dataclass
class Node:
    node_id: str
    url: str
    host: Any
    skill: Any  # V1OnlySkill, or the real WarmIntroSkill (both have .v1 and .ctx)
    events: Recorder

    @property
    def v1(self) -> V1Protocol:
        protocol: V1Protocol = self.skill.v1
        return protocol

    def operator(self, router: Router) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=router, base_url=self.url, timeout=30,
                                 headers={"X-Darkmesh-Key": OPERATOR_KEY})

    def peer(self, router: Router, key: str = SHARED_KEY) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=router, base_url=self.url, timeout=30,
                                 headers={"X-Darkmesh-Key": key})


@dataclass
class Mesh:
    router: Router
    relay: RelayHost
    nodes: dict[str, Node] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    scratch: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="darkmesh-v1-mesh-"))

    async def add_node(
        self,
        node_id: str,
        *,
        data: dict[str, Any] | None = None,
        peers: list[str] | None = None,
        warm: dict[str, Any] | None = None,
        real_skill: bool = False,
        **node: Any,
    ) -> Node:
        """A node with the demo data of ``node_id`` (or ``data``); ``peers`` are node ids
        (or URLs) configured as v1 peers."""
        spec = data if data is not None else DEMO[node_id]
        url = node.pop("listen_url", url_of(node_id))
        peer_list = [
            {"node_id": p if "://" not in p else "ext", "url": p if "://" in p else url_of(p)}
            for p in (peers or [])
        ]
        tables = {"warm_intro": {"response_wait_seconds": WAIT, **(warm or {})}}
        fields: dict[str, Any] = {
            "store": "memory", "auth_mode": "hmac", "listener": False,
            "data_dir": tempfile.mkdtemp(prefix="darkmesh-v1-", dir=self.scratch),
            "node_id": node_id, "listen_url": url, "relay_url": RELAY_URL,
            "relay_key": SHARED_KEY, "node_key": OPERATOR_KEY, "peer_key": SHARED_KEY,
            "self_identifiers": spec.get("self", []), "peers": peer_list, **node,
        }
        settings = load_settings(NodeSettings, tables, overrides=fields)
        if real_skill:  # the installed darkmesh-warm-intro skill (v2 and v1 together)
            pm = make_plugin_manager(only={"darkmesh-sdl.memory-store", "darkmesh-warm-intro"},
                                     environ={})
        else:
            pm = make_plugin_manager(only={"darkmesh-sdl.memory-store"},
                                     plugins=[V1OnlyPlugin()], environ={})
        host = Host(pm, settings, tables, transport=self.router)
        app = create_node_app(host)
        await host.start()
        recorder = Recorder()
        host.events.subscribe("intro.revealed", "test-recorder", recorder)
        await host.store.upsert("contacts", spec.get("contacts", []))
        await host.store.upsert("interactions", spec.get("interactions", []))
        self.router.mount(url, app)
        skill = host.skills["warm-intro"]
        handle = Node(node_id=node_id, url=url, host=host, skill=skill, events=recorder)
        self.nodes[node_id] = handle
        return handle

    def poll(self, node: Node, handler: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
             interval: float = 0.02) -> None:
        """Start a poller for ``node`` (default handler: its ``handle_post``)."""
        handle = handler or node.v1.handle_post

        async def loop() -> None:
            cursor = 0
            while True:
                data = await node.host.relay.pull(cursor, capabilities=["warm_intro_v1"])
                cursor = data["cursor"]
                for post in data["posts"]:
                    await handle(post)
                await asyncio.sleep(interval)

        self.tasks.append(asyncio.create_task(loop(), name=f"poll:{node.node_id}"))

    def relay_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.router, base_url=RELAY_URL, timeout=30)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for node in self.nodes.values():
            await node.host.stop()
        await self.relay.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)


@contextlib.asynccontextmanager
async def mesh() -> AsyncIterator[Mesh]:
    router = Router()
    settings = RelaySettings(backend="memory", key=SecretStr(SHARED_KEY), auth_mode="hmac",
                             public_url=RELAY_URL)
    relay = RelayHost(make_plugin_manager(only={"darkmesh-sdl.memory"}, environ={}), settings)
    app = create_relay_app(relay)
    await relay.start()
    router.mount(RELAY_URL, app)
    handle = Mesh(router=router, relay=relay)
    try:
        yield handle
    finally:
        await handle.close()


async def demo_mesh(stack: contextlib.AsyncExitStack, *, with_c: bool = False,
                    b_warm: dict[str, Any] | None = None) -> Mesh:
    """Relay, A (peers B, C), B, and optionally C, with B and C polling."""
    m = await stack.enter_async_context(mesh())
    await m.add_node("node_a", peers=["node_b", "node_c"])
    b = await m.add_node("node_b", peers=["node_a"], warm=b_warm)
    m.poll(b)
    if with_c:
        c = await m.add_node("node_c", peers=["node_a"])
        m.poll(c)
    return m


# ------------------------------------------------------------------------ shortcuts

PREFIX = "/darkmesh/skills/warm-intro"


def post_body(request_id: str, requester_id: str = "node_a",
              target: dict[str, Any] | None = None,
              emails: tuple[str, ...] = ("casey@connector.com", "blake@otherco.com"),
              ) -> tuple[dict[str, Any], Any]:
    """A psi/respond body as a requester would post it, and the requester's PSI state."""
    from darkmesh_warm_intro.v1 import psi

    own = psi.requester_set([(e, 0.5) for e in emails])
    body = {
        "request_id": request_id,
        "requester_id": requester_id,
        "target": target if target is not None else dict(BASE_REQUEST["target"]),
        "psi": {"protocol": "dh-psi-v1", "p": psi.P_HEX, "x_values": own.x_values},
    }
    return body, own


async def respond(m: Mesh, node: Node, body: dict[str, Any]) -> httpx.Response:
    """Ask ``node`` to evaluate a post, as its own poller does (operator credential)."""
    async with node.operator(m.router) as client:
        return await client.post(f"{PREFIX}/psi/respond", json=body)


async def mint(m: Mesh, node: Node, request_id: str = "req-1", requester_id: str = "node_a",
               target: dict[str, Any] | None = None) -> dict[str, Any]:
    body, _ = post_body(request_id, requester_id, target)
    r = await respond(m, node, body)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    assert answer["eligible"] is True
    return answer


def reveal_body(answer: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body = {
        "request_id": answer["request_id"],
        "requester_id": "node_a",
        "template": "warm_intro_v1",
        "target": dict(BASE_REQUEST["target"]),
        "candidate": {"pseudonym_id": answer["responder"]["pseudonym_id"],
                      "responder_node_id": answer["responder"]["node_id"]},
        "reveal_token": answer["reveal_token"],
    }
    body.update(changes)
    return body


async def reveal(m: Mesh, node: Node, body: dict[str, Any]) -> httpx.Response:
    async with node.peer(m.router) as client:
        return await client.post(f"{PREFIX}/reveal", json=body)
