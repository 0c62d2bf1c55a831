"""Fixtures: a real node app (core guard, this plugin's verifier) with an echo skill."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from darkmesh_aauth.keys import generate_jwk
from darkmesh_aauth.testing import Agent, new_agent, write_trust_file
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sdl_core import Host, MailboxMessage, RouteSpec, SkillSpec, hookimpl
from sdl_core.testing.host import TEST_BUILTINS, make_host
from sdl_core.testing.relay_process import free_port

NODE_URL = "http://localhost:8001"
ECHO = f"{NODE_URL}/darkmesh/skills/echo/echo"
INGEST = f"{NODE_URL}/darkmesh/skills/echo/ingest"
AAUTH_BUILTINS = TEST_BUILTINS | {"darkmesh-aauth"}


class EchoSkill:
    """Answers with the identity the guard attached and the raw body it read."""

    def __init__(self, host: Host, settings: object) -> None:
        self.host = host

    async def echo(self, request: Request) -> Response:
        identity = request.state.identity
        return JSONResponse({
            "scheme": identity.scheme, "sub": identity.sub, "node_id": identity.node_id,
            "capabilities": sorted(identity.capabilities),
            "body": (await request.body()).decode("utf-8", "replace"),
        })

    def routes(self) -> list[RouteSpec]:
        return [
            RouteSpec(path="/echo", endpoint=self.echo, methods=("GET", "POST"),
                      capability="node.query"),
            RouteSpec(path="/ingest", endpoint=self.echo, methods=("POST",),
                      capability="node.ingest"),
        ]

    async def handle_post(self, post: dict[str, Any]) -> None:
        return None

    async def handle_mailbox(self, message: MailboxMessage) -> bool:
        return False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {}


class EchoPlugin:
    __name__ = "echo-skill"

    @hookimpl
    def darkmesh_register_skills(self) -> Iterator[SkillSpec]:
        yield SkillSpec(name="echo", factory=EchoSkill)


@dataclass
class Node:
    host: Host
    client: httpx.AsyncClient
    registry: Path
    agent: Agent


def private_key_file(directory: Path, alg: str = "Ed25519") -> Path:
    import json

    path = directory / "node.private.jwk"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(generate_jwk(alg), handle)  # type: ignore[arg-type]
    return path


def build_host(tmp_path: Path, *, registry: Path, auth_mode: str = "aauth",
               aauth: dict[str, Any] | None = None, **overrides: Any) -> Host:
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    key_file = keys / "node.private.jwk"
    if not key_file.exists():
        private_key_file(keys)
    table = {"private_jwk_path": str(key_file), "trusted_agents_file": str(registry),
             "key_dir": str(keys)}
    table.update(aauth or {})
    values: dict[str, Any] = {"node_id": "node_b", "auth_mode": auth_mode,
                              "listen_url": NODE_URL, "data_dir": str(tmp_path / "data")}
    values.update(overrides)
    return make_host(EchoPlugin(), builtins=AAUTH_BUILTINS, tables={"aauth": table}, **values)


@pytest.fixture
def agent() -> Agent:
    return new_agent("Ed25519", sub="darkmesh-node@node_a", capabilities=("node.query",))


@pytest_asyncio.fixture
async def make_node(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Build and start a node app; ``await make_node(agents=[...], **settings)``."""
    started: list[Node] = []

    async def factory(agents: list[Agent], *, auth_mode: str = "aauth",
                      aauth: dict[str, Any] | None = None, **overrides: Any) -> Node:
        from sdl_core.node_app import create_node_app

        registry = write_trust_file(tmp_path / "trusted_agents.json", agents)
        host = build_host(tmp_path, registry=registry, auth_mode=auth_mode, aauth=aauth,
                          **overrides)
        app = create_node_app(host)
        await host.start()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=NODE_URL)
        node = Node(host=host, client=client, registry=registry,
                    agent=agents[0] if agents else new_agent())
        started.append(node)
        return node

    yield factory
    for node in started:
        await node.client.aclose()
        await node.host.stop()


@pytest_asyncio.fixture
async def node(make_node: Callable[..., Any], agent: Agent) -> Node:
    return await make_node([agent])  # type: ignore[no-any-return]


@pytest.fixture
def unused_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    return free_port()


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    """``await serve(app, port)``: run an ASGI app with Hypercorn on 127.0.0.1:port."""
    import asyncio
    import contextlib

    from sdl_core.serving import serve_app

    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(app: Any, port: int) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(serve_app(app, host="127.0.0.1", port=port,
                                             shutdown_trigger=stop.wait))
        stops.append((stop, task))
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                return
            except OSError:
                if task.done() or asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"server on port {port} did not start") from None
                await asyncio.sleep(0.02)

    yield start
    for stop, task in stops:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
