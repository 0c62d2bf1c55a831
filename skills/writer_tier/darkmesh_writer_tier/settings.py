"""Settings of the writer-tier skill (TOML ``[writer_tier]``, env ``DARKMESH_WRITER_TIER_*``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from sdl_core import DarkmeshSettings


class WriterTierSettings(DarkmeshSettings):
    section: ClassVar[str] = "writer_tier"
    model_config = SettingsConfigDict(
        env_prefix="DARKMESH_WRITER_TIER_", extra="ignore", populate_by_name=True
    )

    expert_posts: int = Field(default=20, ge=1, description="posts needed for 'expert'")
    expert_active_days: int = Field(
        default=10, ge=1, description="distinct active days needed for 'expert'"
    )
    established_posts: int = Field(default=8, ge=1, description="posts needed for 'established'")
    active_posts: int = Field(default=3, ge=1, description="posts needed for 'active'")
    max_observation_ids: int = Field(
        default=500, ge=1, le=10_000, description="most observation ids listed in one answer"
    )

    @model_validator(mode="after")
    def _ordered(self) -> WriterTierSettings:
        if not self.active_posts <= self.established_posts <= self.expert_posts:
            raise ValueError(
                "thresholds must satisfy active_posts <= established_posts <= expert_posts"
            )
        return self
