from __future__ import annotations

from darkmesh_writer_tier import plugin
from darkmesh_writer_tier.settings import WriterTierSettings

from sdl_core import HostHooks, make_plugin_manager


def test_hookimpl_yields_the_skill_spec() -> None:
    (spec,) = list(plugin.darkmesh_register_skills())
    assert spec.name == "writer-tier"
    assert spec.datasets == ("writer_activity",)
    assert spec.capabilities == ("writer_tier.ask",)
    assert spec.settings is WriterTierSettings
    assert spec.templates == ()


def test_is_installed_through_entry_points() -> None:
    pm = make_plugin_manager(only={"darkmesh-writer-tier"})
    hooks = HostHooks(pm)
    assert [s.name for s in hooks.skills()] == ["writer-tier"]
    assert "writer_tier.ask" in {c.name for c in hooks.capabilities()}


def test_disable_hides_it() -> None:
    pm = make_plugin_manager(disable={"darkmesh-writer-tier"}, load=set())
    assert "writer-tier" not in [s.name for s in HostHooks(pm).skills()]
