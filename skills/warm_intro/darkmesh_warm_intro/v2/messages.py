"""Wire models of protocol v2: the relay post and the sealed mailbox messages.

They document, for ``contracts/`` (through :func:`wire_models`), what travels inside a
``warm_intro_v2`` post and inside each sealed envelope; see ``PROTOCOL-v2.md``. The
protocol code validates these structures by hand, with stable refusal reasons (a model
error would say less), and the tests check that every message a real flow sends
validates against its model here.

Binary fields are standard base64 (with padding): element lists are concatenated
32-byte ristretto255 encodings, keys are raw 32-byte X25519 public keys.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from darkmesh_warm_intro.models import ConstraintsModel, Intro, TargetModel

ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
B64_PATTERN = r"^[A-Za-z0-9+/]*={0,2}$"
#: Base64 of 32 raw bytes: 43 characters and one "=".
KEY_PATTERN = r"^[A-Za-z0-9+/]{43}=$"


class _Wire(BaseModel):
    # Receivers ignore unknown fields, so later versions can add some.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class V2PostPsi(_Wire):
    """The ``psi`` block of a ``warm_intro_v2`` post."""

    protocol: Literal["ristretto255-psi-v2"] = Field(description="PSI protocol of this post")
    elements: str = Field(
        pattern=B64_PATTERN,
        description="a·H(x_i) for the requester's contacts, shuffled and padded with random "
        "elements to a size bucket (16, 32, ..., 16384); concatenated 32-byte encodings",
    )
    requester_key: str = Field(pattern=KEY_PATTERN,
                               description="the requester's long-term X25519 public key")


class V2Post(_Wire):
    """A ``warm_intro_v2`` relay post: no callback URL, no reusable response secret."""

    request_id: str = Field(pattern=ID_PATTERN, description="16 hex characters, fresh")
    requester_id: str = Field(pattern=ID_PATTERN, description="the requester's node id")
    template: Literal["warm_intro_v2"]
    target: TargetModel
    constraints: ConstraintsModel
    ttl_seconds: int = Field(ge=1, description="relay post lifetime")
    psi: V2PostPsi


class V2Envelope(_Wire):
    """A mailbox payload (base64 of this JSON): sealed to the recipient's key and
    authenticated by the sender's static key. ``ct`` opens to the body of its ``kind``:
    V2PsiReply, V2Refusal, V2RevealRequest or V2RevealResponse."""

    v: Literal[1] = Field(description="seal version")
    sender: str = Field(alias="from", pattern=ID_PATTERN, description="sender node id")
    to: str = Field(pattern=ID_PATTERN, description="recipient node id")
    request_id: str = Field(pattern=ID_PATTERN)
    kind: Literal["psi_reply", "refusal", "reveal_request", "reveal_response"]
    sender_key: str = Field(pattern=KEY_PATTERN, description="sender's X25519 public key")
    eph: str = Field(pattern=KEY_PATTERN, description="ephemeral X25519 public key")
    nonce: str = Field(pattern=B64_PATTERN, min_length=16, max_length=16,
                       description="12-byte ChaCha20-Poly1305 nonce")
    ct: str = Field(pattern=B64_PATTERN, description="ChaCha20-Poly1305 ciphertext of the "
                    "JSON body; AD = canonical JSON of the header and the recipient key")


class V2Budget(_Wire):
    """What this request cost at the responder (``privacy_cost`` is derived from it)."""

    used: int = Field(ge=0, description="requests of this requester in the current window")
    limit: int = Field(ge=1, description="requests allowed per window")
    window_seconds: int = Field(ge=1)


class V2PsiReply(_Wire):
    """Body of a ``psi_reply`` (responder → requester), one shape whether or not the
    responder matched the target."""

    protocol: Literal["ristretto255-psi-v2"]
    y: str = Field(pattern=B64_PATTERN, description="b·H(y_j) for the responder's own "
                   "identifiers, padded to 8 elements and shuffled")
    entries: str = Field(pattern=B64_PATTERN, description="for each element of the post, "
                         "in its order: tag (16 B) || payload key XOR mask (32 B)")
    payload: str = Field(pattern=B64_PATTERN, description="ChaCha20-Poly1305 of a "
                         "V2MatchPayload padded to 192 bytes (208 bytes with the tag)")
    budget: V2Budget


class V2MatchPayload(_Wire):
    """The plaintext of ``V2PsiReply.payload`` (JSON, space-padded to 192 bytes), readable
    only by a requester that shares an identifier with the responder."""

    match: bool = Field(description="whether the responder knows someone at the target")
    pseudonym_id: str | None = Field(default=None, max_length=64,
                                     description="match only: fresh opaque pseudonym")
    reveal_token: str | None = Field(default=None, max_length=128,
                                     description="match only: single-use, bound reveal token")
    target_strength: float | None = Field(default=None, ge=0.0, le=1.0,
                                          description="match only: strength to the target")


class V2Refusal(_Wire):
    """Body of a ``refusal``: the post was not evaluated; counted as an answer."""

    reason: str = Field(description="budget_exceeded, too_many_elements: …, "
                        "invalid_elements: …, empty_target, malformed, key_changed")
    budget: V2Budget | None = Field(default=None, description="when a budget was spent")


class V2RevealRequest(_Wire):
    """Body of a ``reveal_request`` (requester → responder, after its operator's consent)."""

    reveal_token: str = Field(min_length=1, max_length=128)
    target: TargetModel


class V2RevealResponse(_Wire):
    """Body of a ``reveal_response`` (responder → requester): the final decision."""

    state: Literal["revealed", "declined"]
    intro: Intro | None = Field(default=None, description="revealed only")
    revealed_at: str | None = Field(default=None, description="revealed only, ISO-8601 UTC")
    reason: str | None = Field(default=None, description="declined only")


#: The model of each sealed body, by envelope ``kind``.
BODY_MODELS: dict[str, type[BaseModel]] = {
    "psi_reply": V2PsiReply,
    "refusal": V2Refusal,
    "reveal_request": V2RevealRequest,
    "reveal_response": V2RevealResponse,
}


def wire_models() -> tuple[type[BaseModel], ...]:
    """Every v2 wire model, for ``contracts/`` (schemas ``warm-intro.<Model>``)."""
    return (V2Post, V2Envelope, V2MatchPayload, *BODY_MODELS.values())
