"""The core's SkillContract against the writer-tier skill (its ``/ask`` is a peer route)."""

from __future__ import annotations

import pytest
from darkmesh_writer_tier import plugin

from sdl_core import SkillSpec
from sdl_core.testing.skill_contract import SkillContract


class TestWriterTierSkill(SkillContract):
    @pytest.fixture
    def skill_spec(self) -> SkillSpec:
        (spec,) = plugin.darkmesh_register_skills()
        return spec
