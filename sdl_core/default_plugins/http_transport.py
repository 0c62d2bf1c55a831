"""Built-in transport: HTTP(S) over TCP with httpx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from sdl_core.plugins import hookimpl
from sdl_core.specs import TransportSpec


def _http_transport(host: Any, settings: Any) -> httpx.AsyncBaseTransport:
    # No retries here: callers own retry policy (signed requests are re-signed per try).
    return httpx.AsyncHTTPTransport(retries=0)


@hookimpl(trylast=True)
def darkmesh_register_transports() -> Iterator[TransportSpec]:
    yield TransportSpec(
        name="http",
        factory=_http_transport,
        description="HTTP/1.1 over TCP (httpx)",
    )
