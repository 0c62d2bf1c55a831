"""The core's SkillContract against the warm-intro skill."""

from __future__ import annotations

import pytest
from darkmesh_warm_intro import plugin

from sdl_core import SkillSpec
from sdl_core.testing.skill_contract import SkillContract


class TestWarmIntroSkill(SkillContract):
    @pytest.fixture
    def skill_spec(self) -> SkillSpec:
        (spec,) = plugin.darkmesh_register_skills()
        return spec
