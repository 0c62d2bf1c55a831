"""Wire models of ``warm_intro_v1`` (``wire-v1.md`` §3.6-3.10), for validation and contracts.

Request models validate what the spec validates (422 shapes); the routes that take a
"raw object" (inbox, psi/respond, reveal) read the body by hand so that hostile fields
yield refusals, not 422s, exactly as upstream answers them. Their models here document
the shape for ``contracts/``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from darkmesh_warm_intro.matching import Target

TEMPLATE = "warm_intro_v1"


class _Body(BaseModel):
    # Unknown fields in a request body are ignored (wire-v1.md §0).
    model_config = ConfigDict(extra="ignore")


class TargetBody(_Body):
    company: str | None = None
    role: str | None = None

    def normalised(self) -> Target:
        return Target.from_json({"company": self.company, "role": self.role})


class Constraints(_Body):
    max_candidates: int = Field(default=3, ge=1, le=10)
    min_strength: float = Field(default=0.5, ge=0.0, le=1.0, allow_inf_nan=False)


class RequestBody(_Body):
    """``POST /skills/warm-intro/request`` (§3.6)."""

    template: str = TEMPLATE
    target: TargetBody
    constraints: Constraints = Field(default_factory=Constraints)


class CandidateOut(BaseModel):
    pseudonym_id: str
    score: float
    requires_consent: bool
    consent_id: str


class RequestAnswer(BaseModel):
    request_id: str
    candidates: list[CandidateOut]
    privacy_cost: float


class ConsentBody(_Body):
    """``POST /skills/warm-intro/consent`` (§3.7)."""

    request_id: str
    consent_id: str


class ConsentAnswer(BaseModel):
    request_id: str
    consent_id: str
    approved: bool
    pseudonym_id: str
    intro: dict[str, Any] | None


class InboxBody(_Body):
    """``POST /skills/warm-intro/inbox/{request_id}`` (§3.8); any JSON object."""

    response_token: str | None = None
    response: dict[str, Any] | None = None


class InboxAnswer(BaseModel):
    ok: bool
    received: int


class PsiBlock(_Body):
    protocol: str | None = None
    p: str | None = None
    x_values: list[str] = Field(default_factory=list)


class PsiRespondBody(_Body):
    """``POST /skills/warm-intro/psi/respond`` (§3.9): fields copied from the post."""

    request_id: str | None = None
    requester_id: str | None = None
    target: TargetBody | None = None
    psi: PsiBlock | None = None


class PsiRespondAnswer(BaseModel):
    """Ineligible answers carry only ``request_id`` and ``eligible``."""

    model_config = ConfigDict(extra="allow")
    request_id: str | None
    eligible: bool


class RevealCandidate(_Body):
    pseudonym_id: str | None = None
    responder_node_id: str | None = None


class RevealBody(_Body):
    """``POST /skills/warm-intro/reveal`` (§3.10)."""

    request_id: str | None = None
    requester_id: str | None = None
    template: str = TEMPLATE
    target: TargetBody | None = None
    candidate: RevealCandidate | None = None
    reveal_token: str | None = None


class RevealAnswer(BaseModel):
    """Refusals carry ``reason``; approvals carry ``intro``."""

    model_config = ConfigDict(extra="allow")
    request_id: str | None
    approved: bool
    reason: str | None = None
    intro: dict[str, Any] | None = None
