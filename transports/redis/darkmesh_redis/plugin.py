"""Entry point of darkmesh-redis: registers the ``redis`` relay backend. No I/O here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from darkmesh_redis.settings import RedisSettings
from sdl_core import RelayBackendSpec, hookimpl


def build_backend(relay_host: Any, settings: Any) -> Any:
    """``RelayBackendSpec`` factory: the backend connects only when the relay starts."""
    # Imported here so that loading the plugin never imports redis-py.
    from darkmesh_redis.backend import RedisRelayBackend

    return RedisRelayBackend(settings if settings is not None else RedisSettings())


@hookimpl
def darkmesh_register_relay_backends() -> Iterator[RelayBackendSpec]:
    yield RelayBackendSpec(
        name="redis",
        factory=build_backend,
        settings=RedisSettings,
        description="Redis Streams and hashes; several relay processes share one Redis",
    )
