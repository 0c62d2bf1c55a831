"""The plugin alone: its hookimpl, entry-point discovery, settings and README."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from darkmesh_redis import plugin
from darkmesh_redis.backend import RedisRelayBackend
from darkmesh_redis.settings import RedisSettings, redacted_url, settings_table
from pydantic import SecretStr

from sdl_core import (
    HostHooks,
    PluginSettingsError,
    RelayBackend,
    RelayHost,
    RelaySettings,
    make_plugin_manager,
)

README = Path(__file__).resolve().parents[1] / "README.md"


def load_settings(model: type[RedisSettings], tables: dict[str, dict[str, object]],
                  plugin: str) -> RedisSettings:
    """The settings a relay would validate, through the host's public API."""
    relay = RelayHost(make_plugin_manager(only={plugin}), RelaySettings(backend="redis"),
                      tables)
    settings: RedisSettings = relay.plugin_settings(model, plugin=plugin)
    return settings


def test_hookimpl_registers_the_redis_backend() -> None:
    specs = list(plugin.darkmesh_register_relay_backends())
    assert [s.name for s in specs] == ["redis"]
    assert specs[0].settings is RedisSettings
    assert specs[0].description


def test_plugin_is_installed_under_its_distribution_name() -> None:
    pm = make_plugin_manager(only={"darkmesh-redis"})
    assert pm.get_plugin("darkmesh-redis") is not None
    hooks = HostHooks(pm)
    assert [s.name for s in hooks.relay_backends()] == ["redis"]
    assert hooks.owner_of("darkmesh_register_relay_backends", "redis") == "darkmesh-redis"


def test_loading_the_plugin_does_not_import_redis_py() -> None:
    # plugin.py must stay import-cheap: redis-py is imported by the factory only.
    import subprocess

    code = ("import sys, darkmesh_redis.plugin; "
            "print('redis' in sys.modules, 'darkmesh_redis.backend' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split() == ["False", "False"]


def test_factory_builds_an_unconnected_backend() -> None:
    backend = plugin.build_backend(None, RedisSettings(url="redis://127.0.0.1:1/0"))
    assert isinstance(backend, RedisRelayBackend)
    assert isinstance(backend, RelayBackend)
    assert backend.status()["events_stream"] == "not started"


def test_relay_host_selects_the_backend_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DARKMESH_REDIS_URL", "redis://127.0.0.1:6390/2")
    monkeypatch.setenv("DARKMESH_REDIS_KEY_PREFIX", "net-a:")
    relay = RelayHost.create(pm=make_plugin_manager(only={"darkmesh-redis"}),
                             overrides={"backend": "redis"})
    spec = relay.hooks.relay_backends()[0]
    backend = relay.build(spec, "darkmesh_register_relay_backends")
    assert isinstance(backend, RedisRelayBackend)
    assert backend.settings.url == "redis://127.0.0.1:6390/2"
    assert backend.keys.meta == "net-a:meta"


def test_settings_come_from_the_environment_and_the_toml_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DARKMESH_REDIS_POSTS_MAX_LEN", "500")
    settings = load_settings(RedisSettings, {"redis": {"posts_max_len": 99,
                                                       "key_prefix": "from-file:"}},
                             plugin="darkmesh-redis")
    assert settings.posts_max_len == 500  # environment over file
    assert settings.key_prefix == "from-file:"
    assert settings.url == "redis://127.0.0.1:6379/0"


def test_a_bad_url_names_the_variable_and_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DARKMESH_REDIS_URL", "http://127.0.0.1:6379")
    with pytest.raises(PluginSettingsError) as info:
        load_settings(RedisSettings, {}, plugin="darkmesh-redis")
    message = str(info.value)
    assert message.startswith("darkmesh-redis: DARKMESH_REDIS_URL ([redis] url)")
    assert "redis://" in message and "DARKMESH_DISABLE_PLUGINS=darkmesh-redis" in message


@pytest.mark.parametrize("field, value", [("retry_attempts", 0), ("posts_max_len", 1),
                                          ("socket_timeout_seconds", 0), ("key_prefix", "")])
def test_out_of_range_settings_are_refused(field: str, value: object) -> None:
    with pytest.raises(PluginSettingsError, match=f"DARKMESH_REDIS_{field.upper()}"):
        load_settings(RedisSettings, {"redis": {field: value}}, plugin="darkmesh-redis")


def test_password_never_shows() -> None:
    assert redacted_url("redis://user:hunter2@db.internal:6380/1") == (
        "redis://user:***@db.internal:6380/1"
    )
    assert redacted_url("redis://:hunter2@db.internal/0") == "redis://:***@db.internal/0"
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    backend = RedisRelayBackend(RedisSettings(url="redis://u:hunter2@127.0.0.1:1/0"))
    assert "hunter2" not in repr(backend.status())
    assert "hunter2" not in repr(RedisSettings(password=SecretStr("hunter2")))


def test_readme_settings_table_matches_the_model() -> None:
    assert settings_table() in README.read_text(encoding="utf-8"), (
        "README settings table is stale; paste darkmesh_redis.settings.settings_table()"
    )
