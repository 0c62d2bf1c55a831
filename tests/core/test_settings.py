"""Settings: sources and their precedence, secrets, error messages, config files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from sdl_core import (
    ConfigError,
    DarkmeshSettings,
    Host,
    NodeSettings,
    PluginSettingsError,
    RelaySettings,
    StoreSpec,
    hookimpl,
)
from sdl_core.settings import config_path, env_name, load_settings, read_config_file, redacted
from sdl_core.testing.host import make_host

pytestmark = pytest.mark.usefixtures("darkmesh_clean_env")


class AcmeSettings(DarkmeshSettings):
    section: ClassVar[str] = "acme"
    model_config = SettingsConfigDict(env_prefix="DARKMESH_ACME_", extra="ignore")

    url: str = Field(description="Acme server URL")
    token: SecretStr = Field(default=SecretStr(""), description="Acme API token")
    retries: int = Field(default=3, ge=0, description="retries per call")


def _write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------ precedence


def test_precedence_flag_over_env_over_file_over_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _write_toml(tmp_path / "darkmesh.toml", """
[node]
node_id = "from_file"
port = 8100
relay_url = "http://relay.example:9000/"
""")
    tables, warnings = read_config_file(config)
    assert warnings == []
    from_file = load_settings(NodeSettings, tables)
    assert (from_file.node_id, from_file.port) == ("from_file", 8100)
    assert from_file.relay_url == "http://relay.example:9000"  # trailing / stripped
    assert from_file.ingest_max_records == 50_000  # default

    monkeypatch.setenv("DARKMESH_PORT", "8200")
    from_env = load_settings(NodeSettings, tables)
    assert (from_env.node_id, from_env.port) == ("from_file", 8200)

    from_flag = load_settings(NodeSettings, tables, overrides={"port": 8300, "node_id": None})
    assert (from_flag.node_id, from_flag.port) == ("from_file", 8300)  # None = flag not given
    assert from_flag.listen_url == "http://localhost:8300"


def test_alias_variables_and_list_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DARKMESH_NODE_ID", "node_a")
    monkeypatch.setenv("DARKMESH_AUTH_MODE", "hmac")
    monkeypatch.setenv("DARKMESH_SELF_IDENTIFIERS", '[" Casey@Example.com ", ""]')
    s = load_settings(NodeSettings, {})
    assert s.auth_mode == "hmac"
    assert s.self_identifiers == ["casey@example.com"]
    assert env_name(NodeSettings, "auth_mode") == "DARKMESH_AUTH_MODE"
    assert env_name(RelaySettings, "key") == "DARKMESH_RELAY_KEY"
    assert env_name(AcmeSettings, "url") == "DARKMESH_ACME_URL"


def test_relay_settings_read_their_own_table_and_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    tables: dict[str, dict[str, Any]] = {"relay": {"port": 9100, "backend": "memory"},
                                         "node": {"port": 1}}
    monkeypatch.setenv("DARKMESH_RELAY_KEY", "relay-secret")
    s = load_settings(RelaySettings, tables)
    assert (s.port, s.backend, s.key.get_secret_value()) == (9100, "memory", "relay-secret")
    assert s.public_url == "http://localhost:9100"


def test_config_path_flag_then_env_then_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert config_path(None) is None  # clean cwd, no DARKMESH_CONFIG
    local = _write_toml(Path("darkmesh.toml"), "[node]\nnode_id='x'\n")
    assert config_path(None) == local
    monkeypatch.setenv("DARKMESH_CONFIG", str(tmp_path / "env.toml"))
    assert config_path(None) == tmp_path / "env.toml"
    assert config_path(tmp_path / "flag.toml") == tmp_path / "flag.toml"


# --------------------------------------------------------------------- secrets


def test_secrets_are_secretstr_and_redacted() -> None:
    s = load_settings(NodeSettings, {"node": {"node_id": "n", "node_key": "hunter2-node",
                                              "peer_key": ""}})
    assert isinstance(s.node_key, SecretStr)
    assert "hunter2-node" not in repr(s) and "hunter2-node" not in str(s)
    shown = redacted(s)
    assert shown["node_key"] == "**********"
    assert shown["peer_key"] == ""  # unset secrets show as empty, not as stars
    assert shown["data_dir"] == "data"
    assert "hunter2-node" not in json.dumps(shown)


# ---------------------------------------------------------------------- errors


def test_plugin_settings_error_names_plugin_variable_key_and_fix() -> None:
    with pytest.raises(PluginSettingsError) as info:
        load_settings(AcmeSettings, {}, plugin="darkmesh-acme")
    assert str(info.value) == (
        "darkmesh-acme: DARKMESH_ACME_URL ([acme] url) is required (Acme server URL). "
        "Set them, or start without the plugin: DARKMESH_DISABLE_PLUGINS=darkmesh-acme"
    )
    assert info.value.plugin == "darkmesh-acme"


def test_bad_value_names_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DARKMESH_ACME_RETRIES", "-1")
    with pytest.raises(PluginSettingsError, match=r"DARKMESH_ACME_RETRIES \(\[acme\] retries\): "
                                                  r"Input should be greater than or equal to 0"):
        load_settings(AcmeSettings, {"acme": {"url": "http://acme"}}, plugin="darkmesh-acme")


def test_core_settings_error_has_no_disable_hint() -> None:
    with pytest.raises(PluginSettingsError) as info:
        load_settings(NodeSettings, {"node": {"node_id": "bad id!"}})
    message = str(info.value)
    assert message.startswith(
        "darkmesh-sdl: DARKMESH_NODE_ID ([node] node_id): String should match"
    )
    assert "DARKMESH_DISABLE_PLUGINS" not in message


class AcmePlugin:
    __name__ = "darkmesh-acme"

    @hookimpl
    def darkmesh_register_stores(self) -> Iterator[StoreSpec]:
        yield StoreSpec(name="acme", factory=lambda host, settings: settings,
                        settings=AcmeSettings)


def test_host_validates_the_selected_plugin_settings_naming_the_plugin() -> None:
    host = make_host(AcmePlugin(), store="acme")
    with pytest.raises(PluginSettingsError, match=r"^darkmesh-acme: DARKMESH_ACME_URL .*required"):
        host.prepare()
    ok = make_host(AcmePlugin(), store="acme", tables={"acme": {"url": "http://acme"}})
    ok.prepare()
    assert isinstance(ok.store, AcmeSettings)  # the factory got the validated settings
    assert ok.store.url == "http://acme"


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    bad = _write_toml(tmp_path / "bad.toml", "[node\nnode_id = ")
    with pytest.raises(ConfigError, match=r"settings file .*bad.toml is not valid TOML"):
        read_config_file(bad)
    with pytest.raises(ConfigError, match=r"cannot read settings file .*missing.toml"):
        read_config_file(tmp_path / "missing.toml")


def test_unknown_table_is_reported_not_fatal(tmp_path: Path) -> None:
    config = _write_toml(tmp_path / "darkmesh.toml",
                         "[node]\nnode_id = 'node_a'\n\n[not_a_plugin]\nx = 1\n")
    host = Host.create(config=config, pm=make_host().pm)
    assert host.settings.node_id == "node_a"
    assert host.config_warnings == [
        "settings table [not_a_plugin] belongs to no installed plugin; it is ignored"
    ]


# -------------------------------------------------------------------- upstream


UPSTREAM = {
    "node_id": "node_a",
    "port": 8001,
    "vault_path": "vault_a",
    "self_identifiers": ["Alice@Example.com"],
    "capabilities": ["warm_intro_v1"],
    "relay_url": "http://localhost:9000",
    "relay_key": "demo-relay-key",
    "node_key": "demo-relay-key",
    "dev_mode": True,
}


def test_upstream_json_config_loads_through_the_settings_file(tmp_path: Path) -> None:
    config = tmp_path / "node_a.json"
    config.write_text(json.dumps(UPSTREAM))
    tables, warnings = read_config_file(config)
    s: Any = load_settings(NodeSettings, tables)
    assert s.node_id == "node_a"
    assert s.capabilities == ["warm_intro_v1"]
    assert s.self_identifiers == ["alice@example.com"]
    assert s.relay_key.get_secret_value() == "demo-relay-key"
    # DESIGN §11: an upstream node_key becomes node_key and peer_key.
    assert s.node_key.get_secret_value() == "demo-relay-key"
    assert s.peer_key.get_secret_value() == "demo-relay-key"
    assert Path(s.data_dir).name == "vault_a"
    assert any("dev_mode" in w for w in warnings)
