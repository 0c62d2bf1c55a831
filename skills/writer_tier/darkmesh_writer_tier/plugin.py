"""Hook implementations of darkmesh-writer-tier (entry point ``darkmesh-writer-tier``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from darkmesh_writer_tier.settings import WriterTierSettings
from darkmesh_writer_tier.tiers import DATASET
from sdl_core import CapabilitySpec, SkillSpec, hookimpl


def _build_skill(host: Any, settings: Any) -> Any:
    # Imported here so loading the plugin stays cheap (no Starlette import at discovery).
    from darkmesh_writer_tier.skill import WriterTierSkill

    return WriterTierSkill(host, settings)


@hookimpl
def darkmesh_register_skills() -> Iterator[SkillSpec]:
    yield SkillSpec(
        name="writer-tier",
        factory=_build_skill,
        settings=WriterTierSettings,
        datasets=(DATASET,),
        capabilities=("writer_tier.ask",),
        description="Answers 'what tier is writer W in topic T?' with a tier and counts only",
    )


@hookimpl
def darkmesh_register_capabilities() -> Iterator[CapabilitySpec]:
    yield CapabilitySpec(
        name="writer_tier.ask",
        description="ask this node for a writer's tier in a topic",
        owner="darkmesh-writer-tier",
    )
