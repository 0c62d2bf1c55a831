"""``@authority`` comes from configuration, never from ``Host`` (``aauth.md`` §1.4, §2.1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from darkmesh_aauth.testing import new_agent
from pydantic import SecretStr

from sdl_core import PluginSettingsError, StartupError, authorities_from_url, normalise_authority
from sdl_core.testing.host import make_host

PATH = "/darkmesh/skills/echo/echo"


def test_normalisation() -> None:
    assert normalise_authority("LOCALHOST:8001") == "localhost:8001"
    assert normalise_authority("example.com:80") == "example.com"
    assert normalise_authority("example.com:443", "https") == "example.com"
    assert normalise_authority("example.com:443") == "example.com:443"
    assert normalise_authority("https://user@Example.com:8443/x") == "example.com:8443"
    assert normalise_authority("[::1]:9000") == "[::1]:9000"
    assert normalise_authority("::1") == "[::1]"
    with pytest.raises(ValueError):
        normalise_authority("host:port")


def test_default_authorities_cover_every_loopback_spelling() -> None:
    assert authorities_from_url("http://localhost:8001") == [
        "localhost:8001", "127.0.0.1:8001", "[::1]:8001"]
    assert authorities_from_url("https://node-b.example") == ["node-b.example"]


@pytest.mark.asyncio
async def test_signed_for_another_host_is_refused_even_with_its_host_header(
    make_node: Callable[..., Any],
) -> None:
    agent = new_agent(capabilities=("node.query",))
    node = await make_node([agent])
    url = f"http://relay-x.example:9000{PATH}"
    forged = await node.client.get(PATH, headers={**agent.sign("GET", url),
                                                  "Host": "relay-x.example:9000"})
    assert forged.status_code == 401
    assert forged.json()["reason"] == "authority_mismatch"
    plain = await node.client.get(PATH, headers=agent.sign("GET", url))
    assert plain.json()["reason"] == "signature_invalid"
    for spelling in ("localhost:8001", "127.0.0.1:8001", "[::1]:8001"):
        ok = await node.client.get(PATH, headers=agent.sign("GET", f"http://{spelling}{PATH}"))
        assert ok.status_code == 200, spelling


@pytest.mark.asyncio
async def test_configured_authorities_replace_the_defaults(make_node: Callable[..., Any]) -> None:
    agent = new_agent(capabilities=("node.query",))
    node = await make_node([agent], aauth={"authorities": "node-b.example,node-b.lan:8443"})
    ok = await node.client.get(PATH, headers=agent.sign("GET", f"https://node-b.example{PATH}"))
    assert ok.status_code == 200
    ok = await node.client.get(PATH, headers=agent.sign("GET", f"http://node-b.lan:8443{PATH}"))
    assert ok.status_code == 200
    default = await node.client.get(PATH, headers=agent.sign("GET", f"http://localhost:8001{PATH}"))
    assert default.status_code == 401
    # The test client's Host is localhost:8001, which this was signed for: the reason says so.
    assert default.json()["reason"] == "authority_mismatch"


def test_at_most_four_authorities(tmp_path: Any) -> None:
    from darkmesh_aauth.settings import AAuthSettings

    with pytest.raises(ValueError, match="at most 4"):
        AAuthSettings(authorities="a,b,c,d,e")  # type: ignore[arg-type]
    host = make_host(builtins={"darkmesh-sdl.memory-store", "darkmesh-sdl.http",
                               "darkmesh-aauth"},
                     tables={"aauth": {"authorities": ["a", "b", "c", "d", "e"]}},
                     auth_mode="either")
    with pytest.raises(PluginSettingsError, match="DARKMESH_AAUTH_AUTHORITIES"):
        host.prepare()


@pytest.mark.asyncio
async def test_bound_publicly_without_known_authorities_refuses_to_start(
    make_node: Callable[..., Any],
) -> None:
    with pytest.raises(StartupError, match="DARKMESH_AAUTH_AUTHORITIES"):
        await make_node([new_agent()], host="0.0.0.0")
    node = await make_node([new_agent()], host="0.0.0.0",
                           aauth={"authorities": "node-b.example"})
    assert node.host.verifier.status()["authorities"] == ["node-b.example"]


@pytest.mark.asyncio
async def test_signer_auth_over_a_real_socket(make_node: Callable[..., Any],
                                              serve: Callable[..., Any],
                                              unused_port: int) -> None:
    """The plugin's httpx.Auth, Hypercorn on 127.0.0.1, the node app verifying."""
    import json

    from darkmesh_aauth.settings import AAuthSettings
    from darkmesh_aauth.signer import AAuthSigner

    from sdl_core.node_app import create_node_app

    agent = new_agent(sub="darkmesh-node@node_a", capabilities=("node.query",))
    node = await make_node([agent], listen_url=f"http://127.0.0.1:{unused_port}",
                           port=unused_port)
    await serve(create_node_app(node.host), unused_port)
    signer = AAuthSigner(AAuthSettings(private_jwk=SecretStr(json.dumps(agent.key.private_jwk))),
                         node_id="node_a")
    base = f"http://127.0.0.1:{unused_port}"
    async with httpx.AsyncClient(base_url=base, auth=signer.auth("node")) as client:
        got = await client.get(PATH, params={"q": "a b/c"})
        posted = await client.post(PATH, json={"hello": "world"})
        posted_again = await client.post(PATH, json={"hello": "world"})
    assert got.status_code == 200, got.text
    assert got.json()["node_id"] == "node_a"
    assert posted.status_code == 200 and posted.json()["body"] == '{"hello":"world"}'
    assert posted_again.status_code == 200  # signed afresh: a new nonce, not a replay
    async with httpx.AsyncClient(base_url=base) as plain:
        refused = await plain.get(PATH)
    assert refused.status_code == 401
