"""Settings of the warm-intro skill (TOML ``[warm_intro]``, env ``DARKMESH_WARM_INTRO_*``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import SettingsConfigDict

from sdl_core import DarkmeshSettings


class RequesterRule(BaseModel):
    """A per-requester approval rule at this responder."""

    node_id: str = Field(description="requester node id the rule applies to")
    policy: Literal["manual", "auto", "deny"] = Field(description="what to do with its reveals")


class WarmIntroSettings(DarkmeshSettings):
    section: ClassVar[str] = "warm_intro"
    model_config = SettingsConfigDict(
        env_prefix="DARKMESH_WARM_INTRO_", extra="ignore", populate_by_name=True
    )

    # -- upstream v1 names (wire-v1.md §1) ------------------------------------------
    response_wait_seconds: float = Field(
        default=5.0, description="requester's collection window / deadline, seconds (floor 0.1)"
    )
    post_ttl_seconds: int = Field(default=30, description="relay post lifetime, seconds")
    warm_intro_session_ttl: int = Field(
        default=900, description="how long a consent stays possible, seconds (floor 60)"
    )
    reveal_token_ttl_seconds: int = Field(
        default=900, description="reveal token lifetime, seconds (floor 60)"
    )

    # -- protocol switches ------------------------------------------------------------
    default_template: Literal["warm_intro_v2", "warm_intro_v1"] = Field(
        default="warm_intro_v2", description="template used when a request names none"
    )
    v1_enabled: bool = Field(default=True, description="serve and request warm_intro_v1")
    v1_require_approval: bool = Field(
        default=False,
        description="v1 responder: hold reveals until the operator approves (upstream "
        "requesters then see 502 until approval)",
    )
    v1_max_post_values: int = Field(
        default=1000, ge=1, le=100_000,
        description="v1 responder: most x_values a post may carry; each costs one 2048-bit "
        "exponentiation, so larger posts are answered not eligible",
    )
    v1_trust_message_urls: bool = Field(
        default=False,
        description="send the peer key to URLs taken from v1 messages (upstream behaviour; "
        "set automatically for upstream JSON configs)",
    )

    # -- consent and abuse bounds -------------------------------------------------------
    approval_policy: Literal["manual", "auto"] = Field(
        default="manual", description="v2 responder policy for requesters without a rule"
    )
    requester_rules: list[RequesterRule] = Field(
        default_factory=list, description="per-requester approval rules"
    )
    max_contacts: int = Field(
        default=5000, ge=1, le=100_000, description="cap on a request's contact-set size"
    )
    budget_requests: int = Field(
        default=20, ge=1, description="requests one requester may make per budget window"
    )
    budget_window_seconds: int = Field(
        default=3600, ge=1, description="length of the per-requester budget window"
    )

    @field_validator("response_wait_seconds")
    @classmethod
    def _wait_floor(cls, value: float) -> float:
        return max(0.1, value)

    @field_validator("warm_intro_session_ttl", "reveal_token_ttl_seconds")
    @classmethod
    def _ttl_floor(cls, value: int) -> int:
        return max(60, value)
