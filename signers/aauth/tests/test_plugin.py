"""The plugin's records, called directly and discovered through its entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from darkmesh_aauth import plugin
from darkmesh_aauth.settings import AAuthSettings
from darkmesh_aauth.testing import new_agent, write_trust_file
from pydantic import SecretStr

from sdl_core import HostHooks, Signer, StartupError, Verifier, make_plugin_manager
from sdl_core.testing.host import make_host


def test_hookimpls_return_the_records() -> None:
    (signer,) = list(plugin.darkmesh_register_signers())
    (verifier,) = list(plugin.darkmesh_register_verifiers())
    assert signer.name == "aauth" and signer.settings is AAuthSettings
    assert verifier.name == "aauth" and verifier.scheme == "aauth"
    assert {c.name for c in plugin.darkmesh_register_commands()} == {"keygen", "trust"}


def test_is_installed() -> None:
    pm = make_plugin_manager(only={"darkmesh-aauth"}, environ={})
    hooks = HostHooks(pm)
    assert [s.name for s in hooks.signers()] == ["aauth"]
    assert [s.name for s in hooks.verifiers()] == ["aauth"]
    assert {c.name for c in hooks.commands()} == {"keygen", "trust"}


def test_every_setting_is_described() -> None:
    assert AAuthSettings.section == "aauth"
    for name, field in AAuthSettings.model_fields.items():
        assert field.description, name


def test_upstream_variable_names_are_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DARKMESH_TRUSTED_AGENTS_FILE", "/n.json")
    monkeypatch.setenv("DARKMESH_RELAY_TRUSTED_AGENTS_FILE", "/r.json")
    monkeypatch.setenv("DARKMESH_RELAY_AAUTH_AUTHORITIES", "relay.example, relay.lan:9000")
    monkeypatch.setenv("DARKMESH_OPERATOR", "acme")
    monkeypatch.setenv("DARKMESH_AAUTH_TOKEN_TTL_SEC", "600")
    s = AAuthSettings()
    assert (s.trusted_agents_file, s.relay_trusted_agents_file) == (Path("/n.json"),
                                                                    Path("/r.json"))
    assert s.relay_authorities == ["relay.example", "relay.lan:9000"]
    assert s.operator == "acme" and s.token_ttl_sec == 600


def test_both_key_variables_is_an_error() -> None:
    with pytest.raises(ValueError, match="not both"):
        AAuthSettings(private_jwk=SecretStr('{"kty": "OKP"}'), private_jwk_path=Path("/k.jwk"))


def node(tmp_path: Path, mode: str, node_key: str = "", **aauth: Any) -> Any:
    """An unprepared node host with this plugin; no shared key unless given."""
    return make_host(
        builtins={"darkmesh-sdl.memory-store", "darkmesh-sdl.http", "darkmesh-aauth"},
        tables={"aauth": {"key_dir": str(tmp_path / "keys"),
                          **{k: str(v) for k, v in aauth.items()}}},
        auth_mode=mode, node_id="node_b", node_key=node_key, data_dir=str(tmp_path / "d"))


def key_file(tmp_path: Path, agent: Any, mode: int = 0o600) -> Path:
    import json
    import os

    path = tmp_path / "node.private.jwk"
    path.write_text(json.dumps(agent.key.private_jwk))
    os.chmod(path, mode)
    return path


def test_built_pieces_implement_the_core_protocols(tmp_path: Path) -> None:
    me = new_agent(sub="darkmesh-node@node_b")
    registry = write_trust_file(tmp_path / "r.json", [new_agent()])
    host = node(tmp_path, "aauth", private_jwk_path=key_file(tmp_path, me),
                trusted_agents_file=registry)
    host.prepare()
    assert isinstance(host.signer, Signer) and isinstance(host.verifier, Verifier)
    assert host.signer.identity("node").sub == "darkmesh-node@node_b"
    assert host.signer.identity("node").thumbprint == me.thumbprint
    assert not host.signer.has_role("operator")
    assert not host.signer.has_role("connector:csv-contacts")
    assert host.verifier.status()["entries"] == 1


@pytest.mark.parametrize(("mode", "settings", "message"), [
    ("aauth", {"registry": True}, "needs a node key"),
    ("aauth", {"key": True}, "needs a trust registry: set DARKMESH_TRUSTED_AGENTS_FILE"),
    ("aauth", {"key": True, "registry": "empty"}, "needs at least one entry"),
    ("either", {"key": True, "registry": "missing"}, "does not exist"),
    ("either", {"key": True, "registry": "broken"}, "not valid JSON"),
    ("either", {"key": True}, "either needs a shared key (DARKMESH_NODE_KEY)"),
    ("aauth", {"key": 0o640, "registry": True}, "run chmod 600"),
    ("aauth", {"key": True, "registry": True, "sub": "darkmesh-node@node_x"},
     "DARKMESH_AAUTH_SUB 'darkmesh-node@node_x' names node 'node_x'"),
])
def test_start_up_validation(tmp_path: Path, mode: str, settings: dict[str, Any],
                             message: str) -> None:
    aauth: dict[str, Any] = {}
    if settings.get("key"):
        perms = settings["key"] if isinstance(settings["key"], int) and \
            settings["key"] is not True else 0o600
        aauth["private_jwk_path"] = key_file(tmp_path, new_agent(), perms)
    registry = settings.get("registry")
    if registry:
        path = tmp_path / "r.json"
        if registry is True:
            write_trust_file(path, [new_agent()])
        elif registry == "empty":
            write_trust_file(path, [])
        elif registry == "broken":
            path.write_text("{")
            path.chmod(0o600)
        aauth["trusted_agents_file"] = path
    if "sub" in settings:
        aauth["sub"] = settings["sub"]
    host = node(tmp_path, mode, **aauth)
    with pytest.raises(StartupError, match=message.replace("(", r"\(").replace(")", r"\)")):
        host.prepare()


def test_either_with_a_shared_key_and_no_registry_starts(tmp_path: Path) -> None:
    host = make_host(builtins={"darkmesh-sdl.memory-store", "darkmesh-sdl.http",
                               "darkmesh-aauth"}, auth_mode="either", node_key="k" * 24,
                     data_dir=str(tmp_path / "d"))
    host.prepare()
    assert host.verifier is not None and not host.verifier.ready()
    assert host.verifier.status()["path"] is None
