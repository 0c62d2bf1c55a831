"""``served_app``: serve an ASGI app with Hypercorn on 127.0.0.1 in a background thread.

For tests that need real HTTP to an in-process app (a CLI command talking to a node, a
fake upstream service) without a subprocess::

    with served_app(create_node_app(host)) as url:
        httpx.get(f"{url}/darkmesh/health")

The app's lifespan runs (Hypercorn sends it), so a node app starts its host.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from sdl_core.serving import serve_app
from sdl_core.testing.relay_process import free_port

__all__ = ["served_app"]


@contextmanager
def served_app(app: Any, *, health_path: str = "/", startup_timeout: float = 15.0,
               port: int | None = None) -> Iterator[str]:
    """Serve ``app`` until the block exits; yields its base URL.

    ``health_path`` is polled until it answers anything (any status) before yielding.
    """
    chosen = port or free_port()
    loop = asyncio.new_event_loop()
    stop: asyncio.Event | None = None
    ready = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        nonlocal stop
        asyncio.set_event_loop(loop)
        stop = asyncio.Event()
        ready.set()
        try:
            loop.run_until_complete(
                serve_app(app, host="127.0.0.1", port=chosen, shutdown_trigger=stop.wait)
            )
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name=f"served-app-{chosen}", daemon=True)
    thread.start()
    ready.wait(5)
    url = f"http://127.0.0.1:{chosen}"
    deadline = time.monotonic() + startup_timeout
    while True:
        if errors:
            raise RuntimeError(f"app failed to start: {errors[0]!r}") from errors[0]
        try:
            httpx.get(url + health_path, timeout=1)
            break
        except httpx.HTTPError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"app did not answer on {url} within {startup_timeout}s"
                ) from exc
            time.sleep(0.05)
    try:
        yield url
    finally:
        if stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(15)
