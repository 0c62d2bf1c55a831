"""The plugin record, its entry point, and the skill object's Protocol."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from darkmesh_warm_intro import plugin
from darkmesh_warm_intro.settings import WarmIntroSettings
from darkmesh_warm_intro.skill import WarmIntroSkill

from sdl_core import HostHooks, Skill, SkillSpec, make_plugin_manager
from sdl_core.testing.host import make_host


def test_register_skills_direct_call() -> None:
    (spec,) = list(plugin.darkmesh_register_skills())
    assert isinstance(spec, SkillSpec)
    assert spec.name == "warm-intro"
    assert spec.templates == ("warm_intro_v2", "warm_intro_v1")
    assert spec.datasets == ("contacts", "interactions")
    assert spec.settings is WarmIntroSettings


def test_register_commands_direct_call() -> None:
    names = {spec.name for spec in plugin.darkmesh_register_commands()}
    assert names == {"intro", "demo"}
    (intro,) = [s for s in plugin.darkmesh_register_commands() if s.name == "intro"]
    assert set(intro.command.commands) == {  # type: ignore[attr-defined]
        "request", "status", "consent", "pending", "approve", "decline", "keys"}
    keys = intro.command.commands["keys"]  # type: ignore[attr-defined]
    assert set(keys.commands) == {"accept"}


def test_is_installed_through_its_entry_point() -> None:
    pm = make_plugin_manager(only={"darkmesh-warm-intro"}, environ={})
    hooks = HostHooks(pm)
    assert [s.name for s in hooks.skills()] == ["warm-intro"]
    assert {c.name for c in hooks.commands()} >= {"intro", "demo"}


def test_disabled_by_the_switch() -> None:
    pm = make_plugin_manager(only={"darkmesh-warm-intro"}, disable={"darkmesh-warm-intro"},
                             environ={})
    assert "warm-intro" not in [s.name for s in HostHooks(pm).skills()]


def test_skill_implements_the_protocol(tmp_path: Path) -> None:
    host = make_host(plugin, node_id="node_a", data_dir=str(tmp_path))
    host.prepare()
    skill = host.skills["warm-intro"]
    assert isinstance(skill, WarmIntroSkill) and isinstance(skill, Skill)
    paths = {r.path for r in skill.routes()}
    assert {"/request", "/consent", "/v2/requests", "/requests/{request_id}", "/approvals",
            "/approvals/{approval_id}/approve", "/approvals/{approval_id}/decline",
            "/reveals", "/keys", "/keys/{node_id}/accept"} <= paths
    for route in skill.routes():
        assert route.capability, route.path
    caps = {r.path: r.capability for r in skill.routes()}
    assert caps["/request"] == caps["/v2/requests"] == caps["/requests/{request_id}"] == \
        "node.query"
    assert caps["/consent"] == "node.consent"
    assert caps["/approvals"] == caps["/approvals/{approval_id}/approve"] == "node.approve"
    assert host.templates() == ["warm_intro_v2", "warm_intro_v1"]


def test_settings_validation_names_the_variable(tmp_path: Path) -> None:
    from sdl_core import PluginSettingsError

    host = make_host(plugin, node_id="node_a", data_dir=str(tmp_path),
                     tables={"warm_intro": {"approval_policy": "sometimes"}})
    with pytest.raises(PluginSettingsError, match="DARKMESH_WARM_INTRO_APPROVAL_POLICY"):
        host.prepare()


def test_demo_data_ships_with_the_package() -> None:
    names = {p.name for p in resources.files("darkmesh_warm_intro").joinpath(
        "demo_data").iterdir()}
    assert names >= {f"node_{n}_{d}.csv" for n in "abc" for d in ("contacts", "interactions")}
