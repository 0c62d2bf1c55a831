"""Built-in relay backend ``memory``: state in the relay process (tests, demos)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sdl_core.plugins import hookimpl
from sdl_core.specs import RelayBackendSpec


def _memory_backend(relay_host: Any, settings: Any) -> Any:
    from sdl_core.relay.memory_backend import MemoryRelayBackend

    return MemoryRelayBackend()


@hookimpl(trylast=True)
def darkmesh_register_relay_backends() -> Iterator[RelayBackendSpec]:
    yield RelayBackendSpec(
        name="memory",
        factory=_memory_backend,
        description="in-process memory; lost on restart (a restart gives a new epoch)",
    )
