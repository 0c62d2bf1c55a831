"""Hook specifications of the ``darkmesh`` plugin host.

Implementations accept any subset of the parameters, never with defaults (pluggy
skips defaulted ones), and are marked with :data:`sdl_core.hookimpl`.

Call order (stated once, in :class:`sdl_core.plugins.HostHooks`): every registration
hook runs once while the host is built, before settings of the selected pieces are
validated; ``darkmesh_startup`` runs after every factory; ``darkmesh_shutdown`` runs
in reverse registration order when the process stops.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from sdl_core.host import Host
    from sdl_core.specs import (
        CapabilitySpec,
        CommandSpec,
        ConnectorSpec,
        RelayBackendSpec,
        SignerSpec,
        SkillSpec,
        StoreSpec,
        SubscriberSpec,
        TransportSpec,
        VerifierSpec,
    )

PROJECT_NAME = "darkmesh"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)

# ------------------------------------------------------------------ registration


@hookspec
def darkmesh_register_stores() -> Iterable[StoreSpec]:
    """Register stores: where a node's private datasets live.

    Called once at start-up, before any request; must not do I/O. The node uses the
    store named by its ``store`` setting (default ``vault``).

    :returns: :class:`~sdl_core.StoreSpec` records; names are unique across plugins.

    .. versionadded:: 0.1
    """


@hookspec
def darkmesh_register_signers() -> Iterable[SignerSpec]:
    """Register outbound request signers.

    Called once at start-up; must not do I/O. The host builds the first signer whose
    settings validate and uses it for every outbound call in ``aauth``/``either`` mode.

    :returns: :class:`~sdl_core.SignerSpec` records.

    .. versionadded:: 0.1
    """


@hookspec
def darkmesh_register_verifiers() -> Iterable[VerifierSpec]:
    """Register inbound verifiers for the auth middleware of nodes and relays.

    Called once at start-up; must not do I/O. Without a verifier, auth mode ``aauth``
    refuses to start and ``either`` answers signed requests with 503.

    :returns: :class:`~sdl_core.VerifierSpec` records.

    .. versionadded:: 0.1
    """


@hookspec
def darkmesh_register_transports() -> Iterable[TransportSpec]:
    """Register transports: how a node reaches relays and peers.

    Called once at start-up; must not do I/O. The built-in ``http`` transport is httpx
    over TCP; the ``transport`` setting selects one.

    :returns: :class:`~sdl_core.TransportSpec` records.

    .. versionadded:: 0.1
    """


@hookspec
def darkmesh_register_relay_backends() -> Iterable[RelayBackendSpec]:
    """Register relay backends (``sqlite``, ``memory``, ``redis`` …).

    Called once when a relay starts; must not do I/O. The relay's ``backend`` setting
    selects one.

    :returns: :class:`~sdl_core.RelayBackendSpec` records.

    .. versionadded:: 0.1
    """


@hookspec
def darkmesh_register_skills() -> Iterable[SkillSpec]:
    """Register skills: relay templates, routes and datasets.

    Called once at start-up; must not do I/O. Every skill installed and not blocked
    is built and mounted under ``/darkmesh/skills/<name>``.

    :returns: :class:`~sdl_core.SkillSpec` records.

    .. versionadded:: 0.1
    """


@hookspec
def darkmesh_register_connectors() -> Iterable[ConnectorSpec]:
    """Register connectors, each a ``darkmesh ingest <name>`` sub-command.

    Called once when the CLI is built; must not do I/O.

    :returns: :class:`~sdl_core.ConnectorSpec` records.

    .. versionadded:: 0.1
    """


@hookspec
def darkmesh_register_subscribers() -> Iterable[SubscriberSpec]:
    """Register event subscribers (e.g. on ``intro.revealed``).

    Called once at start-up; must not do I/O. The event bus awaits each handler within
    its time budget; a failing or slow handler never fails the request that emitted
    the event.

    :returns: :class:`~sdl_core.SubscriberSpec` records.

    .. versionadded:: 0.1
    """


@hookspec
def darkmesh_register_commands() -> Iterable[CommandSpec]:
    """Register CLI commands added to ``darkmesh``.

    Called once when the CLI is built; must not do I/O.

    :returns: :class:`~sdl_core.CommandSpec` records; names are unique.

    .. versionadded:: 0.1
    """


@hookspec
def darkmesh_register_capabilities() -> Iterable[CapabilitySpec]:
    """Register capability names that routes of the plugin use.

    Called once at start-up; must not do I/O. ``darkmesh trust add`` refuses names
    that neither the core nor an installed plugin declares.

    :returns: :class:`~sdl_core.CapabilitySpec` records.

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------- lifecycle


@hookspec
def darkmesh_startup(host: Host) -> Awaitable[None] | None:
    """Run once after the host has built every piece, before serving requests.

    May return an awaitable; the host awaits it.

    :param host: the running :class:`~sdl_core.Host`.
    :returns: ``None`` or an awaitable.

    .. versionadded:: 0.1
    """


@hookspec
def darkmesh_shutdown(host: Host) -> Awaitable[None] | None:
    """Run once when the process stops, after the last request.

    May return an awaitable; the host awaits it.

    :param host: the running :class:`~sdl_core.Host`.
    :returns: ``None`` or an awaitable.

    .. versionadded:: 0.1
    """
