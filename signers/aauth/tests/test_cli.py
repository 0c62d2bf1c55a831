"""``darkmesh keygen`` and ``darkmesh trust add|list|remove``."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from darkmesh_aauth.cli import keygen, trust
from darkmesh_aauth.keys import JWKError, load_private_key_file
from darkmesh_aauth.testing import new_agent
from starlette.applications import Starlette
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("DARKMESH_"):
            monkeypatch.delenv(name)
    # Only this plugin (and the core's built-ins): other plugins are not under test here.
    monkeypatch.setenv("DARKMESH_LOAD_PLUGINS", "darkmesh-aauth")
    path = tmp_path / "darkmesh.toml"
    path.write_text(
        '[node]\nnode_id = "node_a"\n\n'
        f'[aauth]\ntrusted_agents_file = "{tmp_path / "cli_agents.json"}"\n'
    )
    return path


def run(command: Any, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(command, list(args), input=input, catch_exceptions=False)


def out(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------- keygen


def test_keygen_writes_0600_private_and_public_files(config: Path) -> None:
    made = out(run(keygen, "--config", str(config)))
    keys = config.parent / "keys"
    private, public = keys / "node.private.jwk", keys / "node.public.jwk"
    assert made["private_file"] == str(private) and made["public_file"] == str(public)
    assert mode(private) == 0o600 and mode(keys) == 0o700
    assert made["sub"] == "darkmesh-node@node_a" and made["alg"] == "Ed25519"
    jwk = json.loads(private.read_text())
    assert set(jwk) == {"kty", "crv", "x", "d", "alg", "kid"} and jwk["alg"] == "Ed25519"
    assert jwk["kid"] == made["thumbprint"]
    assert json.loads(public.read_text()) == made["public_jwk"]
    assert "d" not in made["public_jwk"]
    assert load_private_key_file(private).thumbprint == made["thumbprint"]


def test_keygen_puts_keys_beside_the_darkmesh_config_file(
        config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("DARKMESH_CONFIG", str(config))
    made = out(run(keygen))
    assert made["private_file"] == str(config.parent / "keys" / "node.private.jwk")
    assert not (elsewhere / "keys").exists()


def test_keygen_never_overwrites_without_force(config: Path) -> None:
    first = out(run(keygen, "--config", str(config)))
    again = run(keygen, "--config", str(config))
    assert again.exit_code == 1
    assert "exists; pass --force" in again.output
    forced = out(run(keygen, "--config", str(config), "--force", "--alg", "ES256"))
    assert forced["thumbprint"] != first["thumbprint"]
    assert mode(Path(forced["private_file"])) == 0o600
    assert set(json.loads(Path(forced["private_file"]).read_text())) == \
        {"kty", "crv", "x", "y", "d", "alg", "kid"}


def test_keygen_connector_and_operator_identities(config: Path, tmp_path: Path) -> None:
    connector = out(run(keygen, "--config", str(config), "--connector", "csv-contacts",
                        "--out", str(tmp_path / "k")))
    assert connector["sub"] == "connector-csv-contacts@node_a"
    assert Path(connector["private_file"]).name == "connector-csv-contacts.private.jwk"
    assert "--capabilities node.ingest" in connector["next"]
    operator = out(run(keygen, "--config", str(config), "--operator", "--out",
                       str(tmp_path / "k")))
    assert operator["sub"] == "darkmesh-operator@node_a"
    both = run(keygen, "--connector", "x", "--operator")
    assert both.exit_code == 2 and "not both" in both.output


def test_private_key_readable_by_others_is_refused(tmp_path: Path, config: Path) -> None:
    made = out(run(keygen, "--config", str(config)))
    os.chmod(made["private_file"], 0o644)
    with pytest.raises(JWKError, match=f"run chmod 600 {made['private_file']}"):
        load_private_key_file(Path(made["private_file"]))


# -------------------------------------------------------------------- trust


def public_file(tmp_path: Path, name: str = "peer") -> tuple[Path, Any]:
    agent = new_agent()
    path = tmp_path / f"{name}.public.jwk"
    path.write_text(json.dumps(agent.key.public_jwk))
    return path, agent


def test_trust_add_is_idempotent_by_thumbprint(config: Path, tmp_path: Path) -> None:
    path, agent = public_file(tmp_path)
    registry = tmp_path / "cli_agents.json"
    args = ["add", "--config", str(config), "--public-jwk", str(path),
            "--sub", "darkmesh-node@node_b", "--capabilities", "node.query"]
    appended = out(run(trust, *args))
    assert appended == {"file": str(registry), "thumbprint": agent.thumbprint,
                        "action": "append", "sub": "darkmesh-node@node_b",
                        "iss": "https://darkmesh.local", "capabilities": ["node.query"],
                        "total_entries": 1}
    assert mode(registry) == 0o600
    before = registry.stat().st_mtime_ns, registry.stat().st_ino
    assert out(run(trust, *args))["action"] == "noop"
    assert (registry.stat().st_mtime_ns, registry.stat().st_ino) == before  # no write
    updated = out(run(trust, *args[:-1], "node.query,node.ingest"))
    assert updated["action"] == "update" and updated["total_entries"] == 1
    assert updated["capabilities"] == ["node.query", "node.ingest"]
    other, _ = public_file(tmp_path, "other")
    assert out(run(trust, "add", "--config", str(config), "--public-jwk", str(other),
                   "--sub", "darkmesh-node@node_c"))["total_entries"] == 2


def test_trust_add_dry_run_writes_nothing(config: Path, tmp_path: Path) -> None:
    path, agent = public_file(tmp_path)
    planned = out(run(trust, "add", "--config", str(config), "--public-jwk", str(path),
                      "--sub", "darkmesh-node@node_b", "--dry-run"))
    assert set(planned) == {"file", "thumbprint", "action", "entry", "total_entries_after"}
    assert planned["action"] == "append" and planned["total_entries_after"] == 1
    assert planned["entry"]["thumbprint"] == agent.thumbprint
    assert not (tmp_path / "cli_agents.json").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--capabilities", "relay.*"], "--capabilities: unknown relay.*"),
    ([], "--sub is required"),
])
def test_trust_add_refusals(config: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    path, _ = public_file(tmp_path)
    if "--capabilities" in extra:
        extra = [*extra, "--sub", "x@y"]
    refused = run(trust, "add", "--config", str(config), "--public-jwk", str(path), *extra)
    assert refused.exit_code == 2
    assert message in refused.output


def test_trust_add_refuses_private_key_material(config: Path, tmp_path: Path) -> None:
    made = out(run(keygen, "--config", str(config)))
    refused = run(trust, "add", "--config", str(config), "--public-jwk", made["private_file"],
                  "--sub", "darkmesh-node@node_a")
    assert refused.exit_code == 1
    assert "contains private key material" in refused.output


def test_trust_add_star_warns(config: Path, tmp_path: Path) -> None:
    path, _ = public_file(tmp_path)
    result = CliRunner().invoke(trust, ["add", "--config", str(config), "--public-jwk",
                                        str(path), "--sub", "s@x", "--capabilities", "*"])
    assert result.exit_code == 0
    assert "warning: capability '*' grants every capability" in result.stderr


def test_trust_list_and_remove(config: Path, tmp_path: Path) -> None:
    first, a = public_file(tmp_path, "a")
    second, b = public_file(tmp_path, "b")
    for path, sub in ((first, "darkmesh-node@node_b"), (second, "darkmesh-node@node_c")):
        out(run(trust, "add", "--config", str(config), "--public-jwk", str(path), "--sub", sub))
    listed = out(run(trust, "list", "--config", str(config)))
    assert [e["thumbprint"] for e in listed["entries"]] == [a.thumbprint, b.thumbprint]
    assert listed["last_error"] is None and listed["loaded_at"]

    dry = out(run(trust, "remove", a.thumbprint, "--config", str(config), "--dry-run"))
    assert dry["action"] == "remove" and dry["total_entries_after"] == 1
    assert len(out(run(trust, "list", "--config", str(config)))["entries"]) == 2
    removed = out(run(trust, "remove", "--sub", "darkmesh-node@node_c", "--config", str(config)))
    assert removed == {"file": str(tmp_path / "cli_agents.json"), "action": "remove",
                       "removed": [b.thumbprint], "total_entries": 1}
    assert out(run(trust, "remove", b.thumbprint, "--config", str(config)))["action"] == "noop"


def test_trust_list_file_reports_a_broken_registry(config: Path, tmp_path: Path) -> None:
    broken = tmp_path / "upstream.json"
    broken.write_text(json.dumps({"agents": [{"sub": "", "public_jwk": {}}]}))
    broken.chmod(0o600)
    result = run(trust, "list", "--config", str(config), "--file", str(broken))
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["entries"] == [] and "agents[0]" in report["last_error"]


# ------------------------------------------------------------------ pairing


@pytest.mark.asyncio
async def test_trust_add_from_url_pairs_with_a_real_node(
    config: Path, tmp_path: Path, make_node: Callable[..., Any], serve: Callable[..., Any],
    unused_port: int,
) -> None:
    from sdl_core.node_app import create_node_app

    node = await make_node([new_agent()], listen_url=f"http://127.0.0.1:{unused_port}",
                           port=unused_port)
    await serve(create_node_app(node.host), unused_port)
    url = f"http://127.0.0.1:{unused_port}"
    expected = node.host.signer.identity("node").thumbprint

    wrong = await asyncio.to_thread(
        run, trust, "add", "--config", str(config), "--from-url", url,
        "--expect-thumbprint", "not-it")
    assert wrong.exit_code == 1 and f"serves key {expected}" in wrong.output

    declined = await asyncio.to_thread(
        CliRunner().invoke, trust, ["add", "--config", str(config), "--from-url", url],
        input="n\n")
    assert declined.exit_code == 1 and not (tmp_path / "cli_agents.json").exists()

    paired = out(await asyncio.to_thread(
        run, trust, "add", "--config", str(config), "--from-url", url,
        "--expect-thumbprint", expected, "--capabilities",
        "relay.register,relay.publish,relay.pull,relay.mailbox.send,relay.mailbox.read"))
    assert paired["action"] == "append" and paired["thumbprint"] == expected
    assert paired["sub"] == "darkmesh-node@node_b"

    jwks = await node.client.get("/.well-known/jwks.json")
    assert jwks.headers["cache-control"] == "max-age=300"
    (key,) = jwks.json()["keys"]
    assert key["use"] == "sig" and key["kid"] == expected and "d" not in key


@pytest.mark.asyncio
async def test_from_url_refuses_a_cross_host_redirect(
    config: Path, serve: Callable[..., Any], unused_port: int,
) -> None:
    async def elsewhere(request: Any) -> Any:
        return RedirectResponse("http://evil.example/.well-known/jwks.json", status_code=302)

    async def huge(request: Any) -> Any:
        return JSONResponse({"pad": "x" * 100_000})

    app = Starlette(routes=[Route("/.well-known/jwks.json", elsewhere),
                            Route("/big/.well-known/jwks.json", huge)])
    await serve(app, unused_port)
    base = f"http://127.0.0.1:{unused_port}"
    redirected = await asyncio.to_thread(run, trust, "add", "--config", str(config),
                                         "--from-url", base, "--expect-thumbprint", "t")
    assert redirected.exit_code == 1
    assert "refusing a redirect" in redirected.output and "evil.example" in redirected.output
    oversized = await asyncio.to_thread(run, trust, "add", "--config", str(config),
                                        "--from-url", f"{base}/big", "--expect-thumbprint", "t")
    assert oversized.exit_code == 1 and "larger than 65536 bytes" in oversized.output
