"""Typed records returned by the registration hooks.

Every record is a frozen, keyword-only dataclass with a unique ``name``. A record
*declares* a piece; the object its ``factory`` builds *acts*. Factories are called
once at start-up with the host and the plugin's validated settings (or ``None`` when
the record names no settings model)::

    factory(host, settings) -> object

so ``plugin.py`` modules stay import-cheap and free of I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import click
    from pydantic_settings import BaseSettings

    from sdl_core.host import Host

Factory = Callable[["Host", "BaseSettings | None"], Any]

#: A route's guard: a capability name, ``"public"`` (no auth) or ``"operator-session"``
#: (the dashboard's own session, not AAuth).
PUBLIC = "public"
OPERATOR_SESSION = "operator-session"


@dataclass(frozen=True, kw_only=True)
class RouteSpec:
    """One HTTP route and the capability that guards it.

    Skills return these from ``Skill.routes()``; ``path`` is relative to the skill's
    mount point ``/darkmesh/skills/<skill name>``. Signers and verifiers may return
    absolute ones (the AAuth JWKS route). ``bound_field`` documents which body field
    the handler binds to the caller's identity (for ``contracts/routes.json``).
    """

    path: str
    endpoint: Callable[..., Any]
    methods: tuple[str, ...] = ("GET",)
    capability: str
    name: str | None = None
    request_model: Any = None
    response_model: Any = None
    bound_field: str | None = None
    max_body_bytes: int | None = None
    description: str = ""
    #: In shared-key mode, a peer route is opened by the node's ``peer_key`` (the key
    #: peers hold), every other route by the operator's ``node_key``.
    peer_route: bool = False


@dataclass(frozen=True, kw_only=True)
class _Spec:
    name: str
    factory: Factory
    settings: type[BaseSettings] | None = None
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class StoreSpec(_Spec):
    """A store: where a node's private datasets live (see :class:`sdl_core.Store`)."""


@dataclass(frozen=True, kw_only=True)
class SignerSpec(_Spec):
    """An outbound signer (see :class:`sdl_core.Signer`)."""


@dataclass(frozen=True, kw_only=True)
class VerifierSpec(_Spec):
    """An inbound verifier used by the node's and the relay's auth middleware.

    ``scheme`` names what it verifies (``"aauth"``); the middleware picks the verifier
    whose scheme the configured auth mode needs.
    """

    scheme: str = "aauth"


@dataclass(frozen=True, kw_only=True)
class TransportSpec(_Spec):
    """How a node reaches relays and peers: the factory returns an
    ``httpx.AsyncBaseTransport``."""


@dataclass(frozen=True, kw_only=True)
class RelayBackendSpec(_Spec):
    """A relay backend (see :class:`sdl_core.RelayBackend`)."""


@dataclass(frozen=True, kw_only=True)
class SkillSpec(_Spec):
    """A skill: relay templates it serves, datasets it reads, capabilities it declares.

    :param templates: relay templates the skill answers (``warm_intro_v2``); the node
        advertises them and the listener dispatches posts by them.
    :param datasets: dataset names the skill reads; ``/darkmesh/ingest`` accepts them.
    :param capabilities: capability names the skill's routes use beyond the core's.
    """

    templates: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ConnectorSpec:
    """A connector: a ``darkmesh ingest <name>`` sub-command reading one source."""

    name: str
    command: click.Command
    description: str = ""
    settings: type[BaseSettings] | None = None


@dataclass(frozen=True, kw_only=True)
class SubscriberSpec:
    """An event subscriber. ``factory(host, settings)`` returns an async callable
    ``handler(event) -> None`` awaited by the event bus within its time budget."""

    name: str
    event: str
    factory: Factory
    settings: type[BaseSettings] | None = None
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class CommandSpec:
    """A CLI command added to ``darkmesh`` (or to a group of it, e.g. ``"neotoma"``)."""

    name: str
    command: click.Command
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class CapabilitySpec:
    """A capability name a plugin declares, so ``darkmesh trust add`` accepts it."""

    name: str
    description: str = ""
    owner: str = field(default="darkmesh-sdl")


AuthMode = Literal["hmac", "aauth", "either"]
