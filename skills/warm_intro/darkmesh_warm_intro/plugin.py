"""Entry point of ``darkmesh-warm-intro``: hookimpls only, nothing slow imported."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from darkmesh_warm_intro.settings import WarmIntroSettings
from sdl_core import CommandSpec, SkillSpec, hookimpl


def _factory(host: Any, settings: Any) -> Any:
    from darkmesh_warm_intro.skill import WarmIntroSkill

    return WarmIntroSkill(host, settings)


@hookimpl
def darkmesh_register_skills() -> Iterator[SkillSpec]:
    yield SkillSpec(
        name="warm-intro",
        factory=_factory,
        settings=WarmIntroSettings,
        templates=("warm_intro_v2", "warm_intro_v1"),
        datasets=("contacts", "interactions"),
        description="Private warm intros: PSI over ristretto255 (v2) and upstream dh-psi-v1",
    )


@hookimpl
def darkmesh_register_commands() -> Iterator[CommandSpec]:
    from darkmesh_warm_intro.cli import demo_command, intro_group

    yield CommandSpec(name="intro", command=intro_group,
                      description="request, consent to and approve warm intros")
    yield CommandSpec(name="demo", command=demo_command,
                      description="relay + three nodes on loopback, one intro end to end")
