"""The plugin host: registration, the load/disable switches, failures that stop start-up."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sdl_core import (
    CapabilitySpec,
    HostHooks,
    PluginConflictError,
    PluginLoadError,
    SkillSpec,
    StoreSpec,
    TransportSpec,
    hookimpl,
    make_plugin_manager,
)
from sdl_core.catalog import specs_by_plugin
from sdl_core.plugins import BUILTIN_PREFIX, _entry_points, plugin_infos


def _store(host: Any, settings: Any) -> object:
    return object()


class AcmeStores:
    __name__ = "acme-stores"

    @hookimpl
    def darkmesh_register_stores(self) -> Iterator[StoreSpec]:
        yield StoreSpec(name="acme", factory=_store, description="Acme test store")


def test_temporary_plugin_records_are_collected() -> None:
    pm = make_plugin_manager(entry_points=False, plugins=[AcmeStores()])
    stores = HostHooks(pm).stores()
    assert [s.name for s in stores] == ["acme"]
    assert HostHooks(pm).owner_of("darkmesh_register_stores", "acme") == "acme-stores"
    assert pm.get_plugin("acme-stores") is not None


def test_capabilities_may_be_declared_twice_in_pluggy_order() -> None:
    # pluggy order: the plugin registered last comes first (third-party over built-in).
    class One:
        __name__ = "one"

        @hookimpl
        def darkmesh_register_capabilities(self) -> Iterator[CapabilitySpec]:
            yield CapabilitySpec(name="x.read", description="first", owner="one")

    class Two:
        __name__ = "two"

        @hookimpl
        def darkmesh_register_capabilities(self) -> Iterator[CapabilitySpec]:
            yield CapabilitySpec(name="x.read", description="second", owner="two")

    pm = make_plugin_manager(entry_points=False, plugins=[One(), Two()])
    caps = HostHooks(pm).capabilities()
    assert [(c.name, c.owner) for c in caps] == [("x.read", "two")]


def test_duplicate_spec_names_name_both_plugins() -> None:
    class OtherAcme:
        __name__ = "other-acme"

        @hookimpl
        def darkmesh_register_stores(self) -> Iterator[StoreSpec]:
            yield StoreSpec(name="acme", factory=_store)

    pm = make_plugin_manager(entry_points=False, plugins=[AcmeStores(), OtherAcme()])
    with pytest.raises(PluginConflictError) as info:
        HostHooks(pm).stores()
    message = str(info.value)
    assert "store 'acme' is registered by both 'other-acme' and 'acme-stores'" in message
    assert "DARKMESH_DISABLE_PLUGINS" in message


def test_check_pending_catches_a_misspelt_hookimpl() -> None:
    class Typo:
        __name__ = "typo-plugin"

        @hookimpl
        def darkmesh_register_store(self) -> Iterator[StoreSpec]:  # missing "s"
            yield StoreSpec(name="typo", factory=_store)

    with pytest.raises(PluginLoadError) as info:
        make_plugin_manager(entry_points=False, plugins=[Typo()])
    message = str(info.value)
    assert "plugin 'typo-plugin' failed to load" in message
    assert "unknown hook 'darkmesh_register_store'" in message
    assert "DARKMESH_DISABLE_PLUGINS=typo-plugin" in message


def test_hookimpl_with_unknown_parameter_is_refused_at_registration() -> None:
    class WrongArgs:
        __name__ = "wrong-args"

        @hookimpl
        def darkmesh_startup(self, hots: Any) -> None:  # misspelt parameter
            return None

    with pytest.raises(PluginLoadError, match="plugin 'wrong-args' failed to load"):
        make_plugin_manager(entry_points=False, plugins=[WrongArgs()])


# -------------------------------------------------- real entry-point discovery


def _write_distribution(root: Path, dist: str, ep_name: str, module: str, source: str) -> None:
    """A minimal installed distribution: ``*.dist-info`` with an entry point + module."""
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[darkmesh]\n{ep_name} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


GOOD_PLUGIN = """
    from sdl_core import TransportSpec, hookimpl

    @hookimpl
    def darkmesh_register_transports():
        yield TransportSpec(name="pigeon", factory=lambda host, settings: None)
"""

BROKEN_PLUGIN = """
    import a_module_that_is_not_installed_anywhere
"""


@pytest.fixture
def fake_dists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _write_distribution(tmp_path, "darkmesh-pigeon", "darkmesh-pigeon",
                        "darkmesh_pigeon_plugin", GOOD_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _other_builtins(keep: set[str]) -> set[str]:
    """Built-ins to block so the test does not depend on every one being importable."""
    return {ep.name for ep in _entry_points() if ep.name.startswith(BUILTIN_PREFIX)} - keep


def test_entry_point_plugin_is_discovered(fake_dists: Path) -> None:
    pm = make_plugin_manager(only={"darkmesh-pigeon"})
    assert [t.name for t in HostHooks(pm).transports()] == ["pigeon"]
    (info,) = plugin_infos(pm)
    assert (info.name, info.distribution, info.version, info.builtin) == (
        "darkmesh-pigeon", "darkmesh-pigeon", "0.1", False)
    assert specs_by_plugin(pm) == {"darkmesh-pigeon": {"transport": ["pigeon"]}}


def test_load_plugins_allow_list_limits_third_party_only(fake_dists: Path) -> None:
    blocked = ",".join(_other_builtins({"darkmesh-sdl.http"}))
    without = make_plugin_manager(environ={"DARKMESH_LOAD_PLUGINS": "darkmesh-nothing",
                                           "DARKMESH_DISABLE_PLUGINS": blocked})
    assert without.get_plugin("darkmesh-pigeon") is None
    assert without.get_plugin("darkmesh-sdl.http") is not None  # built-ins still load
    with_it = make_plugin_manager(environ={"DARKMESH_LOAD_PLUGINS": " darkmesh-pigeon ,",
                                           "DARKMESH_DISABLE_PLUGINS": blocked})
    names = {t.name for t in HostHooks(with_it).transports()}
    assert names == {"http", "pigeon"}


def test_disable_plugins_blocks_a_builtin(fake_dists: Path) -> None:
    blocked = _other_builtins({"darkmesh-sdl.http"}) | {"darkmesh-sdl.http"}
    pm = make_plugin_manager(environ={"DARKMESH_LOAD_PLUGINS": "darkmesh-pigeon",
                                      "DARKMESH_DISABLE_PLUGINS": ",".join(blocked)})
    assert pm.is_blocked("darkmesh-sdl.http")
    assert [t.name for t in HostHooks(pm).transports()] == ["pigeon"]
    # Blocked names stay blocked for late registrations too (pluggy set_blocked).
    from sdl_core.default_plugins import http_transport

    assert pm.register(http_transport, name="darkmesh-sdl.http") is None


def test_broken_plugin_stops_startup_naming_it_and_the_switch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_distribution(tmp_path, "darkmesh-broken", "darkmesh-broken",
                        "darkmesh_broken_plugin", BROKEN_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError) as info:
        make_plugin_manager(only={"darkmesh-broken", "darkmesh-sdl.http"})
    message = str(info.value)
    assert info.value.plugin == "darkmesh-broken"
    assert "plugin 'darkmesh-broken' failed to load: ModuleNotFoundError" in message
    assert "DARKMESH_DISABLE_PLUGINS=darkmesh-broken" in message
    # The fix the message names works.
    pm = make_plugin_manager(only={"darkmesh-broken", "darkmesh-sdl.http"},
                             disable={"darkmesh-broken"})
    assert [t.name for t in HostHooks(pm).transports()] == ["http"]


def test_builtins_are_registered_through_the_entry_point_group() -> None:
    names = {ep.name for ep in _entry_points()}
    assert {"darkmesh-sdl.http", "darkmesh-sdl.memory-store", "darkmesh-sdl.vault"} <= names
    pm = make_plugin_manager(only={"darkmesh-sdl.http"})
    (info,) = plugin_infos(pm)
    assert info.builtin is True
    assert info.distribution == "darkmesh-sdl"
    assert "darkmesh_register_transports" in info.hooks


def test_transport_spec_is_importable_from_the_public_api() -> None:
    # Plugins import records from sdl_core only; the record used above comes from there.
    assert TransportSpec.__module__ == "sdl_core.specs"


def test_registration_records_are_collected_once_per_set_of_implementations() -> None:
    calls: list[str] = []

    class Skills:
        __name__ = "counting-skills"

        @staticmethod
        @hookimpl
        def darkmesh_register_skills() -> list[SkillSpec]:
            calls.append("skills")
            return [SkillSpec(name="counting", factory=lambda host, settings: None,
                              templates=("counting_v1",))]

    class Late:
        __name__ = "late-skills"

        @staticmethod
        @hookimpl
        def darkmesh_register_skills() -> list[SkillSpec]:
            return [SkillSpec(name="late", factory=lambda host, settings: None,
                              templates=("late_v1",))]

    pm = make_plugin_manager(entry_points=False, plugins=[Skills])
    hooks = HostHooks(pm)
    for _ in range(5):
        assert [s.name for s in hooks.skills()] == ["counting"]
    assert calls == ["skills"]
    pm.register(Late, name="late-skills")  # a new implementation is seen at once
    assert sorted(s.name for s in hooks.skills()) == ["counting", "late"]
