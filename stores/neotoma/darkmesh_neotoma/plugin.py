"""Hook implementations of darkmesh-neotoma (and nothing else: no I/O at import)."""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from typing import Any

from darkmesh_neotoma.settings import NeotomaSettings
from sdl_core import (
    INTRO_REVEALED,
    CommandSpec,
    ConnectorSpec,
    Host,
    StoreSpec,
    SubscriberSpec,
    hookimpl,
)


def _writeback_handler(host: Host, settings: Any) -> Any:
    from darkmesh_neotoma.runtime import runtime_for

    return runtime_for(host).writeback


def _store(host: Host, settings: Any) -> Any:
    from darkmesh_neotoma.store import NeotomaStore

    return NeotomaStore(host, settings)


@hookimpl
def darkmesh_register_stores() -> Iterator[StoreSpec]:
    yield StoreSpec(
        name="neotoma", factory=_store, settings=NeotomaSettings,
        description="Contacts and interactions read live from Neotoma (TTL cache), falling "
        "back to the vault while Neotoma is unreachable",
    )


@hookimpl
def darkmesh_register_subscribers() -> Iterator[SubscriberSpec]:
    yield SubscriberSpec(
        name="neotoma-writeback", event=INTRO_REVEALED, factory=_writeback_handler,
        settings=NeotomaSettings,
        description="Write one signed warm_intro_reveal per approved reveal and side",
    )


@hookimpl
def darkmesh_register_commands() -> Iterator[CommandSpec]:
    from darkmesh_neotoma.cli import neotoma

    yield CommandSpec(name="neotoma", command=neotoma,
                      description="Neotoma grants, source comparison and admission probe")


@hookimpl
def darkmesh_register_connectors() -> Iterator[ConnectorSpec]:
    from darkmesh_neotoma.cli import ingest_neotoma

    yield ConnectorSpec(name="neotoma", command=ingest_neotoma, settings=NeotomaSettings,
                        description="Sync contacts from Neotoma (connector neotoma-sync)")


@hookimpl
def darkmesh_startup(host: Host) -> Awaitable[None] | None:
    from darkmesh_neotoma.runtime import runtime_for

    if getattr(host, "role", "node") != "node":
        return None  # relays have no Neotoma side
    return runtime_for(host).startup()


@hookimpl
def darkmesh_shutdown(host: Host) -> Awaitable[None] | None:
    from darkmesh_neotoma.runtime import existing_runtime

    if getattr(host, "role", "node") != "node":
        return None
    runtime = existing_runtime(host)
    return runtime.shutdown() if runtime is not None else None
