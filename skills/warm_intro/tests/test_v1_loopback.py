"""v1 over real HTTP on 127.0.0.1: Hypercorn-served relay and nodes, the core listener
delivering posts to the protocol, the HTTP transport carrying inbox and reveal calls."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from darkmesh_warm_intro.v1.testing import (
    BASE_REQUEST,
    DEMO,
    OPERATOR_KEY,
    PREFIX,
    SHARED_KEY,
    WAIT,
    V1OnlyPlugin,
)

from sdl_core import Host, RelayHost, RelaySettings
from sdl_core.node_app import create_node_app
from sdl_core.plugins import make_plugin_manager
from sdl_core.relay.app import create_relay_app
from sdl_core.serving import serve_app
from sdl_core.settings import NodeSettings, load_settings
from sdl_core.testing.relay_process import free_port


async def wait_healthy(url: str) -> None:
    async with httpx.AsyncClient(timeout=1) as client:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never became healthy")


@contextlib.asynccontextmanager
async def serving(app: Any, port: int, health: str) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve_app(app, host="127.0.0.1", port=port,
                                         shutdown_trigger=stop.wait))
    try:
        await wait_healthy(f"http://127.0.0.1:{port}{health}")
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


def node_host(node_id: str, port: int, relay_url: str, peers: list[str], data_dir: str
              ) -> Host:
    tables = {"warm_intro": {"response_wait_seconds": WAIT}}
    settings = load_settings(NodeSettings, tables, overrides={
        "node_id": node_id, "port": port, "listen_url": f"http://127.0.0.1:{port}",
        "store": "memory", "auth_mode": "hmac", "node_key": OPERATOR_KEY,
        "peer_key": SHARED_KEY, "relay_url": relay_url, "relay_key": SHARED_KEY,
        "self_identifiers": DEMO[node_id]["self"], "data_dir": data_dir,
        "listener": True, "listener_wait_seconds": 1.0,
        "peers": [{"node_id": f"peer{i}", "url": url} for i, url in enumerate(peers)],
    })
    pm = make_plugin_manager(only={"darkmesh-sdl.memory-store", "darkmesh-sdl.http"},
                             plugins=[V1OnlyPlugin()], environ={})
    return Host(pm, settings, tables)


@pytest.mark.asyncio
async def test_demo_intro_over_loopback() -> None:
    relay_port, a_port, b_port = free_port(), free_port(), free_port()
    relay_url = f"http://127.0.0.1:{relay_port}"
    a_url, b_url = f"http://127.0.0.1:{a_port}", f"http://127.0.0.1:{b_port}"
    relay = RelayHost(
        make_plugin_manager(only={"darkmesh-sdl.memory"}, environ={}),
        RelaySettings(backend="memory", key=SHARED_KEY, auth_mode="hmac",
                      public_url=relay_url),
    )
    with tempfile.TemporaryDirectory() as scratch:
        a = node_host("node_a", a_port, relay_url, [b_url], f"{scratch}/a")
        b = node_host("node_b", b_port, relay_url, [a_url], f"{scratch}/b")
        a_app, b_app = create_node_app(a), create_node_app(b)
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(
                serving(create_relay_app(relay), relay_port, "/darkmesh/relay/health"))
            await stack.enter_async_context(serving(a_app, a_port, "/darkmesh/health"))
            await stack.enter_async_context(serving(b_app, b_port, "/darkmesh/health"))
            for host in (a, b):
                data = DEMO[host.settings.node_id]
                await host.store.upsert("contacts", data["contacts"])
                await host.store.upsert("interactions", data["interactions"])
            await asyncio.sleep(0.3)  # B's listener registers and starts its long-poll
            async with httpx.AsyncClient(base_url=a_url, timeout=20,
                                         headers={"X-Darkmesh-Key": OPERATOR_KEY}) as client:
                r = await client.post(f"{PREFIX}/request", json=BASE_REQUEST)
                assert r.status_code == 200, r.text
                [candidate] = r.json()["candidates"]
                assert candidate["score"] == 0.904
                c = await client.post(f"{PREFIX}/consent", json={
                    "request_id": r.json()["request_id"],
                    "consent_id": candidate["consent_id"]})
            assert c.status_code == 200, c.text
            intro = c.json()["intro"]
            assert intro["connector"]["node_id"] == "node_b"
            assert intro["target_contact"]["email"] == "taylor@companyx.com"
            assert b.skills["warm-intro"].v1.audit_log()[-1]["outcome"] == "approved"
