"""Pydantic models of every relay request and response body.

They document the wire (``spec/wire-v1.md`` §4 plus DESIGN.md §11 "Relay additions")
and generate the JSON Schemas in ``contracts/``. The relay app validates bodies by hand
so that its 400 messages stay byte-for-byte upstream's; the tests check every answer the
app gives against these models, which keeps the two in step.

Limits (list sizes, string lengths) are module constants so the app, the models and the
client agree on them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Longest node id, alias, template, request id, token, message id (characters).
MAX_ID_CHARS = 256
#: Longest registered node URL.
MAX_URL_CHARS = 2048
#: Most templates one node may register or pull with.
MAX_CAPABILITIES = 64
#: Most aliases (pseudonyms) one node may hold at a time.
MAX_ALIASES = 256
#: Most message ids in one mailbox ack.
MAX_ACK_IDS = 1000
#: Pull ``limit`` bounds (upstream clamps into them) and default.
PULL_LIMIT_MIN, PULL_LIMIT_MAX, PULL_LIMIT_DEFAULT = 1, 100, 20
#: Mailbox pull ``limit`` bounds and default.
MAILBOX_LIMIT_MIN, MAILBOX_LIMIT_MAX, MAILBOX_LIMIT_DEFAULT = 1, 100, 50
#: Post ``ttl_seconds`` bounds (upstream clamps into them) and default.
TTL_MIN, TTL_MAX, TTL_DEFAULT = 5, 300, 30
#: The template whose posts follow upstream's publish rules.
V1_TEMPLATE = "warm_intro_v1"
#: Default capabilities of a register or pull that names none (upstream).
DEFAULT_CAPABILITIES: tuple[str, ...] = (V1_TEMPLATE,)


class _Body(BaseModel):
    # Unknown fields in a request body are ignored (wire-v1 §0).
    model_config = ConfigDict(extra="ignore")


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------ errors, health


class ErrorResponse(_Answer):
    """Every refusal: ``{"detail": <string>, "reason"?: <stable code>}``."""

    detail: str
    reason: str | None = Field(default=None, description="stable machine-readable code")


class HealthResponse(_Answer):
    """``GET /darkmesh/relay/health`` (public); counts are taken after purging."""

    status: Literal["ok"]
    auth_mode: Literal["hmac", "aauth", "either"]
    nodes: int = Field(ge=0, description="registered nodes")
    posts: int = Field(ge=0, description="live (unexpired) posts")
    epoch: str = Field(description="identity of the stored data (Darkmesh addition)")
    backend: str = Field(description="relay backend name (Darkmesh addition)")


# ---------------------------------------------------------------------- registry


class RegisterRequest(_Body):
    """``POST /darkmesh/relay/nodes/register`` (``relay.register``, ``node_id`` bound)."""

    node_id: str = Field(max_length=MAX_ID_CHARS, description="trimmed; bound to the signer")
    url: str = Field(max_length=MAX_URL_CHARS, description="trimmed, trailing / removed")
    capabilities: list[str] | None = Field(
        default=None, max_length=MAX_CAPABILITIES,
        description='templates served; ["warm_intro_v1"] when absent',
    )
    aliases: list[str] = Field(
        default_factory=list, max_length=MAX_ALIASES,
        description="pseudonyms that mailbox senders may use as `to`; replaces the node's "
        "earlier set; never disclosed",
    )
    relay_key: str | None = Field(default=None, description="shared relay secret (hmac)")


class NodeRecordModel(_Answer):
    """A registry entry as the relay returns it."""

    node_id: str
    url: str
    capabilities: list[str]
    last_seen: float = Field(description="Unix time of the last registration")


class RegisterResponse(_Answer):
    ok: Literal[True]
    node: NodeRecordModel


class NodesResponse(_Answer):
    """``GET /darkmesh/relay/nodes`` (``relay.list``; shared key in a header)."""

    nodes: list[NodeRecordModel]


# ------------------------------------------------------------------------- posts


class PublishRequest(_Body):
    """``POST /darkmesh/relay/posts`` (``relay.publish``, ``requester_id`` bound).

    ``requester_url`` and ``response_token`` are required for ``warm_intro_v1`` posts
    only; v2 posts carry neither. The relay never inspects ``target``, ``psi`` or
    ``constraints``: protocol data of other templates (blinded elements, the
    requester's public key) travels inside them.
    """

    request_id: str = Field(max_length=MAX_ID_CHARS)
    requester_id: str = Field(max_length=MAX_ID_CHARS)
    requester_url: str | None = Field(default=None, max_length=MAX_URL_CHARS)
    template: str = Field(max_length=MAX_ID_CHARS)
    response_token: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    target: dict[str, Any] = Field(default_factory=dict)
    psi: dict[str, Any] = Field(default_factory=dict)
    constraints: dict[str, Any] = Field(default_factory=dict)
    ttl_seconds: int = Field(
        default=TTL_DEFAULT, description=f"clamped to [{TTL_MIN}, {TTL_MAX}]"
    )
    relay_key: str | None = None


class PublishResponse(_Answer):
    ok: Literal[True]
    post_id: str = Field(pattern=r"^[0-9a-f]{12}$")
    seq: int = Field(ge=1)
    expires_at: float
    live_nodes: int = Field(
        ge=0, description="other nodes serving the template seen in the live window "
        "(Darkmesh addition)",
    )


class StoredPost(BaseModel):
    """A post as pullers receive it. ``requester_url`` and ``response_token`` are present
    on ``warm_intro_v1`` posts (and on others that sent them)."""

    model_config = ConfigDict(extra="forbid")

    seq: int = Field(ge=1)
    post_id: str = Field(pattern=r"^[0-9a-f]{12}$")
    request_id: str
    requester_id: str
    requester_url: str | None = None
    template: str
    target: dict[str, Any]
    psi: dict[str, Any]
    constraints: dict[str, Any]
    response_token: str | None = None
    created_at: float
    expires_at: float


class PullRequest(_Body):
    """``POST /darkmesh/relay/posts/pull`` (``relay.pull``, ``node_id`` bound)."""

    node_id: str = Field(max_length=MAX_ID_CHARS)
    capabilities: list[str] | None = Field(
        default=None, max_length=MAX_CAPABILITIES,
        description='templates wanted; missing or empty means ["warm_intro_v1"]',
    )
    cursor: int = Field(default=0, ge=0, description="highest seq already seen")
    limit: int = Field(
        default=PULL_LIMIT_DEFAULT,
        description=f"clamped to [{PULL_LIMIT_MIN}, {PULL_LIMIT_MAX}]",
    )
    wait: float = Field(
        default=0.0, ge=0, le=30,
        description="long-poll seconds; 0 answers at once (Darkmesh addition)",
    )
    relay_key: str | None = None


class PullResponse(_Answer):
    node_id: str
    cursor: int = Field(ge=0, description="highest seq examined, never below the given one")
    posts: list[StoredPost]
    epoch: str = Field(
        description="changes only when the relay's data is lost; a listener seeing a new "
        "epoch restarts from cursor 0 (Darkmesh addition)",
    )


# ---------------------------------------------------------------------- mailboxes


class MailboxSendRequest(_Body):
    """``POST /darkmesh/relay/mailbox/send`` (``relay.mailbox.send``).

    ``to`` is a node id or an alias its owner registered. ``from`` is ignored when the
    request is signed (the relay stamps the signer's node id) and required otherwise.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    to: str = Field(max_length=MAX_ID_CHARS)
    from_: str | None = Field(default=None, alias="from", max_length=MAX_ID_CHARS)
    request_id: str = Field(max_length=MAX_ID_CHARS)
    payload: str = Field(description="standard base64; decoded size capped (2 MiB default)")
    relay_key: str | None = None


class MailboxSendResponse(_Answer):
    ok: Literal[True]
    id: str = Field(description="message id, used to ack")
    created_at: float


class MailboxMessageModel(_Answer):
    """One delivered message; redelivered on every pull until acked."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str
    to: str = Field(description="the recipient's node id")
    from_: str = Field(alias="from", description="sender node id")
    from_verified: bool = Field(
        description="True when the relay took the sender from a verified signature; False "
        "when it only recorded the sender the body claimed (shared-key mode)",
    )
    request_id: str
    payload: str = Field(description="base64, opaque to the relay")
    created_at: float


class MailboxPullRequest(_Body):
    """``POST /darkmesh/relay/mailbox/pull`` (``relay.mailbox.read``, owner bound)."""

    node_id: str = Field(max_length=MAX_ID_CHARS)
    wait: float = Field(default=0.0, ge=0, le=30)
    limit: int = Field(
        default=MAILBOX_LIMIT_DEFAULT,
        description=f"clamped to [{MAILBOX_LIMIT_MIN}, {MAILBOX_LIMIT_MAX}]",
    )
    relay_key: str | None = None


class MailboxPullResponse(_Answer):
    node_id: str
    messages: list[MailboxMessageModel]


class MailboxAckRequest(_Body):
    """``POST /darkmesh/relay/mailbox/ack`` (``relay.mailbox.read``, owner bound)."""

    node_id: str = Field(max_length=MAX_ID_CHARS)
    ids: list[str] = Field(max_length=MAX_ACK_IDS)
    relay_key: str | None = None


class MailboxAckResponse(_Answer):
    ok: Literal[True]
    acked: int = Field(ge=0, description="messages removed by this ack")


#: Every model, by the name ``contracts/`` files use.
RELAY_MODELS: dict[str, type[BaseModel]] = {
    "relay.error": ErrorResponse,
    "relay.health.response": HealthResponse,
    "relay.register.request": RegisterRequest,
    "relay.register.response": RegisterResponse,
    "relay.nodes.response": NodesResponse,
    "relay.publish.request": PublishRequest,
    "relay.publish.response": PublishResponse,
    "relay.post": StoredPost,
    "relay.pull.request": PullRequest,
    "relay.pull.response": PullResponse,
    "relay.mailbox.send.request": MailboxSendRequest,
    "relay.mailbox.send.response": MailboxSendResponse,
    "relay.mailbox.message": MailboxMessageModel,
    "relay.mailbox.pull.request": MailboxPullRequest,
    "relay.mailbox.pull.response": MailboxPullResponse,
    "relay.mailbox.ack.request": MailboxAckRequest,
    "relay.mailbox.ack.response": MailboxAckResponse,
}
