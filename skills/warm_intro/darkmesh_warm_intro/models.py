"""Request and response models of the warm-intro HTTP routes (they feed ``contracts/``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TargetModel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    company: str | None = Field(default=None, description="company name (substring match)")
    role: str | None = Field(default=None, description="role (substring match)")


class ConstraintsModel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    max_candidates: int = Field(default=3, ge=1, le=10, description="most candidates returned")
    min_strength: float = Field(default=0.5, ge=0.0, le=1.0, description="lowest score kept")


class IntroRequest(BaseModel):
    """``POST /request`` and ``POST /v2/requests``."""

    model_config = ConfigDict(extra="ignore")
    template: str | None = Field(
        default=None, description="warm_intro_v2 (default) or warm_intro_v1"
    )
    target: TargetModel = Field(description="who to be introduced to; company or role required")
    constraints: ConstraintsModel = Field(default_factory=ConstraintsModel)


class Candidate(BaseModel):
    pseudonym_id: str
    score: float
    requires_consent: bool = True
    consent_id: str
    state: Literal["available", "pending", "revealed", "declined"] | None = Field(
        default=None, description="v2 only: where the consent of this candidate stands"
    )


class IntroAnswer(BaseModel):
    """Answer of a request: the v1 shape plus v2 extras."""

    request_id: str
    candidates: list[Candidate]
    privacy_cost: float = Field(
        description="v2: the largest fraction of a responder's per-requester budget this "
        "request spent; v1: 0.1 x answers received"
    )
    template: str | None = None
    state: Literal["collecting", "complete"] | None = None
    answered: int | None = Field(default=None, description="v2: nodes that answered")
    live_nodes: int | None = Field(default=None, description="v2: nodes expected to answer")
    refused: int | None = Field(default=None, description="v2: responders that refused")


class ConsentRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    request_id: str = Field(min_length=1, max_length=64)
    consent_id: str = Field(min_length=1, max_length=64)


class Intro(BaseModel):
    connector: dict[str, Any]
    target_contact: dict[str, Any]
    relationship_strength: float
    next_step: str


class ConsentAnswer(BaseModel):
    request_id: str
    consent_id: str
    approved: bool
    pseudonym_id: str
    intro: Intro | None
    state: Literal["pending", "revealed", "declined"] | None = Field(
        default=None, description="v2 only; 'pending' until the responder's operator decides"
    )
    reason: str | None = None


class RequestStatus(IntroAnswer):
    """``GET /requests/{request_id}``: the answer plus each candidate's intro."""

    intros: dict[str, Intro] = Field(default_factory=dict, description="by consent_id")
    deadline: float | None = None


class Approval(BaseModel):
    approval_id: str
    template: str
    request_id: str
    requester_node_id: str
    requester_key_fingerprint: str | None = None
    target: TargetModel
    contact: dict[str, Any] = Field(description="the contact that would be revealed")
    created_at: float
    state: str


class ApprovalList(BaseModel):
    approvals: list[Approval]


class DecisionAnswer(BaseModel):
    approval_id: str
    state: str
    approved: bool


class RevealLog(BaseModel):
    reveals: list[dict[str, Any]]


class KeyList(BaseModel):
    node_id: str
    fingerprint: str
    pinned: list[dict[str, Any]]
    pending_changes: list[dict[str, Any]]


class KeyAccepted(BaseModel):
    node_id: str
    fingerprint: str


REQUEST_STATES = ("collecting", "complete", "expired")
#: ``GET /requests``: default and largest ``limit``.
LIST_DEFAULT, LIST_MAX = 50, 200


class RequestSummary(BaseModel):
    """One line of ``GET /requests``: a request this node made, v2 or v1.

    Counts only: no responder is named until an intro was revealed (then ``peer`` is the
    connector's node id and ``contact`` its name, org and role, never the email).
    """

    request_id: str
    template: str
    side: Literal["requester"] = "requester"
    target: TargetModel
    created_at: float = Field(description="epoch seconds")
    at: float = Field(description="same as created_at (the dashboard's column)")
    state: Literal["collecting", "complete", "expired"] = Field(
        description="collecting answers, complete (candidates final), or expired (v1: the "
        "collection window was lost to a restart)"
    )
    candidates: int = Field(ge=0, description="candidates offered")
    revealed: int = Field(ge=0, description="candidates whose intro was revealed")
    pending: int = Field(ge=0, description="v2: consents waiting for the responder")
    declined: int = Field(ge=0, description="candidates whose reveal was declined")
    answered: int | None = Field(default=None, description="v2: nodes that answered")
    live_nodes: int | None = Field(default=None, description="v2: nodes expected to answer")
    refused: int | None = Field(default=None, description="v2: responders that refused")
    contact: dict[str, str | None] = Field(
        default_factory=dict, description="first revealed contact: name, org, role"
    )
    peer: str | None = Field(default=None, description="connector of the first revealed intro")


class RequestList(BaseModel):
    """``GET /requests?limit=&state=``: newest first."""

    requests: list[RequestSummary]
