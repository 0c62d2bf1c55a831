"""The dashboard's trust-registry panel with darkmesh-aauth: add a pasted public JWK,
refuse private keys and unknown capabilities, add from a node URL only after the
thumbprint is confirmed (the same capped, same-origin fetch as ``trust add --from-url``),
and revoke."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
from darkmesh_aauth import plugin as aauth_plugin
from darkmesh_aauth.keys import generate_jwk, public_jwk, thumbprint
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sdl_core.dashboard.sessions import COOKIE_NAME
from sdl_core.serving import serve_app
from sdl_core.testing.host import make_host, running_node_app
from sdl_core.testing.relay_process import free_port

UI = "/darkmesh/ui"


@pytest_asyncio.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[Any, Any, Path]]:
    registry = tmp_path / "trusted_agents.json"
    fd = os.open(registry, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, json.dumps({"version": 1, "agents": []}).encode())
    os.close(fd)
    host = make_host(aauth_plugin, node_id="node_a", auth_mode="either",
                     data_dir=str(tmp_path / "data"),
                     tables={"aauth": {"trusted_agents_file": str(registry),
                                       "key_dir": str(tmp_path / "keys")}})
    async with running_node_app(host) as app:
        yield host, app, registry


async def _session(app: Any) -> tuple[httpx.AsyncClient, str]:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                               base_url="http://localhost:8001", follow_redirects=False)
    token = parse_qs(urlsplit(app.state.dashboard.login_url()).query)["token"][0]
    login = await client.get(f"{UI}/login", params={"token": token})
    client.cookies.set(COOKIE_NAME, login.cookies[COOKIE_NAME], path=UI)
    page = (await client.get(UI)).text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found
    return client, found.group(1)


def _agents(registry: Path) -> list[dict[str, Any]]:
    return list(json.loads(registry.read_text())["agents"])


@pytest.mark.asyncio
async def test_paste_refuse_and_revoke(node: tuple[Any, Any, Path]) -> None:
    _, app, registry = node
    private = generate_jwk("Ed25519")
    public = public_jwk(private)
    client, csrf = await _session(app)
    try:
        html = (await client.get(UI)).text
        assert "No trusted keys." in html and str(registry) in html

        secret = await client.post(f"{UI}/trust/add", data={
            "csrf_token": csrf, "public_jwk": json.dumps(private), "sub": "agent@x"})
        assert secret.status_code == 303
        assert "private key material" in (await client.get(UI)).text
        unknown = await client.post(f"{UI}/trust/add", data={
            "csrf_token": csrf, "public_jwk": json.dumps(public), "sub": "agent@x",
            "capabilities": "node.query,node.everything"})
        assert "unknown capabilities: node.everything" in (await client.get(UI)).text
        assert unknown.status_code == 303 and _agents(registry) == []

        added = await client.post(f"{UI}/trust/add", data={
            "csrf_token": csrf, "public_jwk": json.dumps(public),
            "sub": "darkmesh-operator@node_a", "capabilities": "node.query, node.approve"})
        assert added.status_code == 303
        [entry] = _agents(registry)
        assert entry["thumbprint"] == thumbprint(public)
        assert entry["capabilities"] == ["node.query", "node.approve"]
        assert "d" not in entry["public_jwk"]
        assert registry.stat().st_mode & 0o077 == 0
        page = (await client.get(UI)).text
        assert f"append {thumbprint(public)}" in page
        assert f'data-thumbprint="{thumbprint(public)}"' in page
        again = await client.post(f"{UI}/trust/add", data={
            "csrf_token": csrf, "public_jwk": json.dumps(public),
            "sub": "darkmesh-operator@node_a", "capabilities": "node.query, node.approve"})
        assert again.status_code == 303 and "noop" in (await client.get(UI)).text

        forged = await client.post(f"{UI}/trust/remove", data={
            "csrf_token": "forged", "thumbprint": thumbprint(public)})
        assert forged.status_code == 403 and len(_agents(registry)) == 1
        removed = await client.post(f"{UI}/trust/remove", data={
            "csrf_token": csrf, "thumbprint": thumbprint(public)})
        assert removed.status_code == 303 and _agents(registry) == []
        assert f"revoked {thumbprint(public)}" in (await client.get(UI)).text
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_add_from_url_needs_the_confirmed_thumbprint(node: tuple[Any, Any, Path]) -> None:
    _, app, registry = node
    peer_public = public_jwk(generate_jwk("Ed25519"))

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse({"keys": [{**peer_public, "use": "sig"}]})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "node_id": "node_peer"})

    peer = Starlette(routes=[Route("/.well-known/jwks.json", jwks),
                             Route("/darkmesh/health", health)])
    port = free_port()
    stop = asyncio.Event()
    server = asyncio.create_task(serve_app(peer, host="127.0.0.1", port=port,
                                           shutdown_trigger=stop.wait))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                async with httpx.AsyncClient() as probe:
                    if (await probe.get(f"{url}/darkmesh/health")).status_code == 200:
                        break
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
        client, csrf = await _session(app)
        try:
            preview = await client.post(f"{UI}/trust/add", data={
                "csrf_token": csrf, "url": url, "capabilities": "relay.register"})
            assert preview.status_code == 200
            assert thumbprint(peer_public) in preview.text and "node_peer" in preview.text
            assert _agents(registry) == []  # nothing written before the confirmation

            wrong = await client.post(f"{UI}/trust/add", data={
                "csrf_token": csrf, "url": url, "capabilities": "relay.register",
                "expect_thumbprint": "A" * 43})
            assert wrong.status_code == 303 and _agents(registry) == []
            assert "not the confirmed" in (await client.get(UI)).text

            confirmed = await client.post(f"{UI}/trust/add", data={
                "csrf_token": csrf, "url": url, "capabilities": "relay.register",
                "expect_thumbprint": thumbprint(peer_public)})
            assert confirmed.status_code == 303
            [entry] = _agents(registry)
            assert entry["sub"] == "darkmesh-node@node_peer"
            assert entry["capabilities"] == ["relay.register"]

            dead = await client.post(f"{UI}/trust/add", data={
                "csrf_token": csrf, "url": f"http://127.0.0.1:{free_port()}"})
            assert dead.status_code == 303
            assert "cannot read the key" in (await client.get(UI)).text
        finally:
            await client.aclose()
    finally:
        stop.set()
        await server


@pytest.mark.asyncio
async def test_panel_edits_follow_the_trust_cli_rules(node: tuple[Any, Any, Path]) -> None:
    """The panel and ``darkmesh trust add`` share the registry's edit functions: an empty
    issuer keeps the entry's pinned one, and the same entry again is a noop, not a rewrite."""
    from sdl_core.dashboard.trust import TrustPanel

    host, _, registry = node
    public = public_jwk(generate_jwk("Ed25519"))
    panel = TrustPanel(host)
    first = await panel.add(public=public, sub="agent@x", iss="https://issuer.example",
                            capabilities=["node.query"], label="peer")
    assert first["action"] == "append"
    written = registry.stat().st_mtime_ns
    again = await panel.add(public=public, sub="agent@x", iss=None,
                            capabilities=["node.query"], label=None)
    assert again["action"] == "noop" and registry.stat().st_mtime_ns == written
    changed = await panel.add(public=public, sub="agent@x", iss=None,
                              capabilities=["node.query", "node.approve"], label=None)
    assert changed["action"] == "update"
    [entry] = _agents(registry)
    assert (entry["iss"], entry["label"]) == ("https://issuer.example", "peer")
    assert entry["capabilities"] == ["node.query", "node.approve"]
