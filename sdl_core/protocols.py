"""The small typed Protocols that plugin objects implement, and the records they trade.

Each Protocol's docstring says how to implement it. Contract suites in
:mod:`sdl_core.testing` pin the behaviour: subclass one and supply a fixture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import httpx

    from sdl_core.specs import RouteSpec

JSONObject = dict[str, Any]


# --------------------------------------------------------------------------- stores


@runtime_checkable
class Store(Protocol):
    """Where a node's private datasets live.

    Records are JSON objects. Each record has a stable key (:func:`sdl_core.record_key`):
    lower-cased email for contacts and interactions, a hash of the normalised
    name/org/role for contacts without an email, and ``id`` (else a content hash) for
    other datasets. ``upsert`` with a key already present *replaces* that record, so
    re-ingesting a file updates instead of duplicating; iteration keeps first-insert
    order, so "dataset order" rules of the v1 spec hold.

    Every write is atomic: after a crash the dataset shows either all or none of one
    call's records. ``changed_marker`` changes whenever a dataset changes; caches key on
    it. Implementations are async; blocking I/O goes to a thread.
    """

    async def upsert(self, dataset: str, records: Sequence[JSONObject]) -> int:
        """Insert or replace ``records``; return the dataset's record count after."""
        ...

    async def replace(self, dataset: str, records: Sequence[JSONObject]) -> int:
        """Make ``records`` the whole dataset, atomically; return the new count."""
        ...

    async def delete(self, dataset: str, keys: Iterable[str]) -> int:
        """Delete records by key; return how many were removed."""
        ...

    def iterate(self, dataset: str) -> AsyncIterator[JSONObject]:
        """Yield the dataset's records in insertion order."""
        ...

    async def count(self, dataset: str) -> int:
        """Number of records in ``dataset`` (0 when unknown)."""
        ...

    async def changed_marker(self, dataset: str) -> str:
        """An opaque value that changes whenever ``dataset`` changes."""
        ...

    async def close(self) -> None:
        """Release files and connections."""
        ...


# ------------------------------------------------------------------------- relay


@dataclass(frozen=True, kw_only=True)
class NodeRecord:
    """A node in the relay registry (``nodes/register``)."""

    node_id: str
    url: str
    capabilities: tuple[str, ...] = ("warm_intro_v1",)
    last_seen: float = 0.0

    def to_json(self) -> JSONObject:
        return {
            "node_id": self.node_id,
            "url": self.url,
            "capabilities": list(self.capabilities),
            "last_seen": self.last_seen,
        }


@dataclass(frozen=True, kw_only=True)
class MailboxMessage:
    """One message in a node's mailbox. ``sender_verified`` is False when the relay
    only recorded the sender the body claimed (shared-key mode)."""

    id: str
    to: str
    sender: str
    sender_verified: bool
    request_id: str
    payload: str  # base64, opaque to the relay
    created_at: float

    def to_json(self) -> JSONObject:
        return {
            "id": self.id,
            "to": self.to,
            "from": self.sender,
            "from_verified": self.sender_verified,
            "request_id": self.request_id,
            "payload": self.payload,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, kw_only=True)
class PullResult:
    cursor: int
    posts: list[JSONObject]
    epoch: str


@runtime_checkable
class RelayBackend(Protocol):
    """Storage behind the relay routes. The relay app owns HTTP, auth and validation;
    the backend owns state and waiting.

    Semantics every backend keeps (``RelayBackendContract`` tests them):

    * ``seq`` is an integer that never decreases for one ``epoch``; the first post has
      seq 1. ``epoch`` is a string fixed when the stored data is created and changed
      only when that data is lost, shared by every relay process on the same data.
    * ``pull`` follows the v1 selection rule (returned cursor = highest seq examined,
      own posts and other templates skipped but counted) and, with ``wait > 0``,
      returns as soon as a matching post is published by any process, or after
      ``wait`` seconds with no posts.
    * expired posts are never returned and are eventually removed.
    * mailbox messages are returned until acked (at-least-once), in send order; an
      ack removes them; ``mailbox_pull`` with ``wait`` wakes on a send.
    * ``remember_once(key, ttl)`` is an atomic set-if-absent: True the first time,
      False while the key lives.
    * a failure of the underlying store raises :class:`sdl_core.RelayUnavailable`.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def epoch(self) -> str: ...

    async def register_node(self, record: NodeRecord, aliases: Sequence[str] = ()) -> NodeRecord:
        """Replace the registry entry for ``record.node_id`` and its aliases."""
        ...

    async def list_nodes(self) -> list[NodeRecord]: ...

    async def touch_node(self, node_id: str, capabilities: Sequence[str], now: float) -> None:
        """Record that ``node_id`` pulled (liveness for ``live_nodes``)."""
        ...

    async def live_nodes(self, template: str, since: float, exclude: str) -> int:
        """Nodes other than ``exclude`` serving ``template`` seen at or after ``since``."""
        ...

    async def publish(self, post: JSONObject, expires_at: float) -> JSONObject:
        """Store ``post``; assign ``seq`` and ``post_id``; return the stored post."""
        ...

    async def pull(
        self,
        node_id: str,
        capabilities: Sequence[str],
        cursor: int,
        limit: int,
        wait: float,
        now: float,
    ) -> PullResult: ...

    async def count_posts(self, now: float) -> int: ...

    async def purge_expired(self, now: float) -> int: ...

    async def resolve_recipient(self, to: str) -> str | None:
        """Map a node id or a registered alias to a node id; None when unknown."""
        ...

    async def mailbox_send(
        self, to_node: str, sender: str, sender_verified: bool, request_id: str, payload: str,
        now: float,
    ) -> MailboxMessage: ...

    async def mailbox_pull(self, node_id: str, limit: int, wait: float) -> list[MailboxMessage]: ...

    async def mailbox_ack(self, node_id: str, ids: Sequence[str]) -> int: ...

    async def remember_once(self, key: str, ttl: float) -> bool: ...


# -------------------------------------------------------------------------- auth


@dataclass(frozen=True, kw_only=True)
class InboundRequest:
    """What a verifier sees of a request: the raw bytes, never a re-serialisation."""

    method: str
    raw_path: str  # percent-encoded, without the query
    query: str  # raw, without the leading "?"
    headers: Sequence[tuple[str, str]]  # lower-cased names, in arrival order
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name.lower()]
        return ", ".join(values) if values else None


@dataclass(frozen=True, kw_only=True)
class VerifiedAgent:
    sub: str
    iss: str
    thumbprint: str
    public_jwk: Mapping[str, Any]
    algorithm: str
    label: str
    capabilities: frozenset[str]
    node_id: str | None
    jti: str | None = None
    iat: int | None = None
    exp: int | None = None
    created: int | None = None


@dataclass(frozen=True, kw_only=True)
class Identity:
    """Who the auth middleware says the caller is (``request.state.identity``)."""

    scheme: Literal["aauth", "shared-key", "operator-session", "public"]
    sub: str | None = None
    node_id: str | None = None
    capabilities: frozenset[str] = field(default_factory=frozenset)
    agent: VerifiedAgent | None = None

    def allows(self, capability: str) -> bool:
        return "*" in self.capabilities or capability in self.capabilities


class ReplayCache(Protocol):
    async def __call__(self, key: str, ttl: float) -> bool:
        """True the first time ``key`` is seen within ``ttl`` seconds."""
        ...


@runtime_checkable
class Verifier(Protocol):
    """Checks signed inbound requests; plugged into the one auth middleware.

    ``verify`` raises :class:`sdl_core.VerificationFailed` with a stable reason code, or
    returns the :class:`VerifiedAgent` (capabilities taken from its trust registry).
    ``authorities`` are the accepted ``host[:port]`` values from configuration, never
    the ``Host`` header. ``ready()`` is False when the trust registry is empty (the
    middleware then answers 503). ``status()`` feeds ``darkmesh status``.
    """

    def ready(self) -> bool: ...

    async def verify(
        self, request: InboundRequest, *, authorities: Sequence[str], remember_once: ReplayCache
    ) -> VerifiedAgent: ...

    def status(self) -> JSONObject: ...


@dataclass(frozen=True, kw_only=True)
class AgentIdentity:
    sub: str
    iss: str
    thumbprint: str
    public_jwk: Mapping[str, Any]


SignerProfile = Literal["darkmesh", "neotoma"]


@runtime_checkable
class Signer(Protocol):
    """Signs outbound requests. Roles: ``"node"``, ``"operator"``, ``"connector:<name>"``.

    ``auth()`` returns an ``httpx.Auth`` (with ``requires_request_body = True``) that
    signs every attempt afresh. Profile ``"neotoma"`` sends only ``created``.
    ``has_role(role)`` is False when no key is configured for that role.
    """

    def has_role(self, role: str) -> bool: ...

    def identity(self, role: str = "node") -> AgentIdentity: ...

    def auth(
        self, role: str = "node", *, authority: str | None = None,
        profile: SignerProfile = "darkmesh",
    ) -> httpx.Auth: ...


# ------------------------------------------------------------------------- skills


@runtime_checkable
class Skill(Protocol):
    """A skill object built by a :class:`sdl_core.SkillSpec` factory.

    * ``routes()``: :class:`sdl_core.RouteSpec` list, paths relative to
      ``/darkmesh/skills/<spec name>``, each with its capability.
    * ``handle_post(post)``: called by the listener for each relay post whose template
      the skill declared; must not raise for a hostile post (log and return).
    * ``handle_mailbox(message)``: called for each mailbox message addressed to this
      node; return True when handled (the listener then acks it).
    * ``start()`` / ``stop()``: lifecycle, awaited by the host.
    * ``status()``: a JSON object merged into ``/darkmesh/integrations/status``.
    """

    def routes(self) -> Sequence[RouteSpec]: ...

    async def handle_post(self, post: JSONObject) -> None: ...

    async def handle_mailbox(self, message: MailboxMessage) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> JSONObject: ...
