"""The plugin alone: hookimpls, entry point, settings, start-up probe, status."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
from conftest import FakeClock, node_host
from darkmesh_neotoma import plugin
from darkmesh_neotoma.probe import interpret
from darkmesh_neotoma.settings import NeotomaSettings
from standin import StandinServer

from sdl_core import INTRO_REVEALED, HostHooks, PluginSettingsError, make_plugin_manager
from sdl_core.node_app import create_node_app
from sdl_core.testing.host import TEST_NODE_KEY


def test_hookimpls_return_the_records() -> None:
    [store] = list(plugin.darkmesh_register_stores())
    assert store.name == "neotoma" and store.settings is NeotomaSettings
    [subscriber] = list(plugin.darkmesh_register_subscribers())
    assert subscriber.name == "neotoma-writeback" and subscriber.event == INTRO_REVEALED
    [command] = list(plugin.darkmesh_register_commands())
    assert command.name == "neotoma"
    assert set(command.command.commands) == {"grants", "compare", "probe"}  # type: ignore[attr-defined]
    [connector] = list(plugin.darkmesh_register_connectors())
    assert connector.name == "neotoma"


def test_is_installed_through_its_entry_point() -> None:
    pm = make_plugin_manager(only={"darkmesh-neotoma", "darkmesh-sdl.memory-store"}, environ={})
    hooks = HostHooks(pm)
    assert {s.name for s in hooks.stores()} == {"neotoma", "memory"}
    assert [s.name for s in hooks.subscribers()] == ["neotoma-writeback"]
    assert [c.name for c in hooks.commands()] == ["neotoma"]
    assert [c.name for c in hooks.connectors()] == ["neotoma"]
    assert hooks.owner_of("darkmesh_register_stores", "neotoma") == "darkmesh-neotoma"


# -------------------------------------------------------------------- settings


def test_defaults_are_upstreams(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NEOTOMA_URL", "NEOTOMA_TOKEN", "NEOTOMA_READ_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    s = NeotomaSettings()
    assert (s.url, s.entity_type, s.max_entities, s.cache_ttl_seconds) == (
        "http://localhost:3080", "contact", 2000, 15.0)
    assert (s.read_timeout_seconds, s.connector_timeout_seconds, s.writeback_timeout_seconds,
            s.probe_timeout_seconds) == (15.0, 20.0, 10.0, 5.0)
    assert s.read_auth_mode == "auto" and s.fallback_store == "vault" and s.writeback is True
    assert s.grant_settle_seconds > 5


def test_upstream_variables_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEOTOMA_URL", "http://neotoma.local:3180/")
    monkeypatch.setenv("NEOTOMA_TOKEN", "tok")
    monkeypatch.setenv("NEOTOMA_READ_AUTH_MODE", "bearer")
    s = NeotomaSettings()
    assert s.url == "http://neotoma.local:3180" and s.bearer() == "tok"
    assert s.read_auth_mode == "bearer"
    monkeypatch.setenv("DARKMESH_NEOTOMA_URL", "http://ours:1")
    assert NeotomaSettings().url == "http://ours:1"


def test_toml_table_and_upstream_json(tmp_path: Path) -> None:
    from sdl_core import Host

    config = tmp_path / "node.json"
    config.write_text(json.dumps({"node_id": "node_b", "neotoma_url": "http://n:1",
                                  "neotoma_cache_ttl_seconds": 3, "neotoma_read_auth_mode":
                                  "aauth", "node_key": "k"}))
    host = Host.create(config=config)
    s = host.plugin_settings(NeotomaSettings, plugin="darkmesh-neotoma")
    assert (s.url, s.cache_ttl_seconds, s.read_auth_mode) == ("http://n:1", 3, "aauth")


def test_bad_settings_name_the_variable(tmp_path: Path) -> None:
    host = node_host(tmp_path, "ftp://nope")
    with pytest.raises(PluginSettingsError) as info:
        host.prepare()
    assert "darkmesh-neotoma" in str(info.value) and "DARKMESH_NEOTOMA_URL" in str(info.value)


# ------------------------------------------------------------------------ probe


@pytest.mark.parametrize("status, body, signed, outcome, needle", [
    (200, {"aauth": {"verified": True, "admitted": True, "grant_id": "ent_1",
                     "admission_reason": "admitted", "agent_label": "L"}}, True, "admitted",
     "grant ent_1"),
    (200, {"aauth": {"verified": True, "admitted": False, "admission_reason": "no_match"}},
     True, "no_match", "grants provision"),
    (200, {"aauth": {"verified": False, "admitted": False, "admission_reason": "not_signed"},
           "attribution": {"decision": {"signature_error_code": "signature_invalid"}}},
     True, "not_verified", "signature_invalid"),
    (200, {"aauth": {"verified": True, "admitted": False, "reason": "grant_revoked"}}, True,
     "no_match", "grant_revoked"),
    (401, {"error_code": "AUTH_REQUIRED", "message": "Missing Bearer token"}, True,
     "not_admitted", "not admitted"),
    (401, {"error_code": "AAUTH_SIGNATURE_INVALID", "details": {"reason": "jwt_expired"}},
     True, "not_verified", "jwt_expired"),
    (200, {"aauth": {"verified": False, "admitted": False}}, False, "unsigned", "no signer"),
    (502, "bad gateway", True, "error", "502"),
])
def test_probe_outcomes(status: int, body: object, signed: bool, outcome: str,
                        needle: str) -> None:
    result = interpret(status, body, signed=signed, authority="localhost:1",
                       issuer="https://localhost:1")
    assert result.outcome == outcome and needle in result.message()


@pytest.mark.asyncio
async def test_startup_probe_logs_exactly_one_line_and_feeds_status(
    standin: StandinServer, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="darkmesh.neotoma")
    host = node_host(tmp_path, standin.url)
    app = create_node_app(host)
    assert host.signer is not None
    grant = httpx.post(standin.url + "/agents/grants", json={
        "label": "Darkmesh node darkmesh-node@node_b",
        "match_thumbprint": host.signer.identity("node").thumbprint,
        "capabilities": [{"op": "retrieve", "entity_types": ["contact"]}]}).json()["grant"]
    clock.advance(6)
    await host.start()
    try:
        lines = [r.message for r in caplog.records if r.message.startswith("Neotoma")]
        expected = (f"Neotoma admitted this node: grant {grant['grant_id']}, label "
                    "'Darkmesh node darkmesh-node@node_b'")
        assert lines == [expected]
        probes = [r for r in standin.neotoma.requests if r["path"] == "/session"]
        assert len(probes) == 1 and "signature" in probes[0]["headers"]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://node") as client:
            answer = await client.get("/darkmesh/integrations/status",
                                      headers={"X-Darkmesh-Key": TEST_NODE_KEY})
        block = answer.json()["plugins"]["neotoma"]
        assert block["admission"]["outcome"] == "admitted"
        assert block["store"]["mode"] == "live" and block["writeback"]["outbox_depth"] == 0
    finally:
        await host.stop()


@pytest.mark.asyncio
async def test_unreachable_at_startup_is_one_line_and_the_node_still_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    caplog.set_level(logging.INFO, logger="darkmesh.neotoma")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    host = node_host(tmp_path, url)
    host.prepare()
    await host.start()
    try:
        first = next(r.message for r in caplog.records if r.message.startswith("Neotoma"))
        assert first.startswith("Neotoma unreachable")
        status = (await host.plugin_status())["neotoma"]
        assert status["admission"]["outcome"] == "unreachable"
    finally:
        await host.stop()


@pytest.mark.asyncio
async def test_inactive_when_unused(tmp_path: Path) -> None:
    from sdl_core.testing.host import TEST_BUILTINS, make_host

    host = make_host(builtins=set(TEST_BUILTINS) | {"darkmesh-neotoma"}, node_id="node_x",
                     data_dir=str(tmp_path))
    host.prepare()
    await host.start()
    try:
        status = (await host.plugin_status())["neotoma"]
        assert status["active"] is False and status["admission"] is None
        assert status["writeback"]["enabled"] is False
    finally:
        await host.stop()


def test_readme_lists_every_setting_hook_and_spec_name() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")
    for name in NeotomaSettings.model_fields:
        assert f"| `{name}` |" in readme, name
    for needle in ("darkmesh_register_stores", "darkmesh_register_subscribers",
                   "darkmesh_register_commands", "darkmesh_register_connectors",
                   "darkmesh_startup", "`neotoma-writeback`", "`neotoma-sync`", ">= 0.9.0"):
        assert needle in readme, needle
