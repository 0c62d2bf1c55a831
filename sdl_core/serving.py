"""Serve an ASGI app (node or relay) with Hypercorn's asyncio API.

``serve_app`` is the coroutine the CLI and tests build on; ``run_app`` is the blocking
entry point that installs SIGTERM/SIGINT handlers and shuts down gracefully: Hypercorn
stops accepting, lets in-flight requests (long-polls included) finish within
:data:`GRACEFUL_TIMEOUT_SECONDS`, then runs the app's lifespan shutdown.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

#: Time in-flight requests get to finish after a shutdown signal. Long-polls hold at
#: most 30 s; they are cut after this and clients simply pull again.
GRACEFUL_TIMEOUT_SECONDS = 5.0


def bind_address(host: str, port: int) -> str:
    """``host:port`` as Hypercorn wants it (IPv6 literals bracketed)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def hypercorn_config(*, host: str, port: int) -> Config:
    config = Config()
    config.bind = [bind_address(host, port)]
    config.accesslog = None  # structured logs come from the app, not per-request lines
    config.graceful_timeout = GRACEFUL_TIMEOUT_SECONDS
    # Long-polls must outlive Hypercorn's keep-alive and read timeouts.
    config.keep_alive_timeout = 75.0
    return config


async def serve_app(
    app: Any,
    *,
    host: str,
    port: int,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` until ``shutdown_trigger`` returns.

    Without a trigger it serves until cancelled. The app's lifespan runs at start and
    at shutdown (Hypercorn sends the lifespan events).
    """
    config = hypercorn_config(host=host, port=port)
    trigger: Callable[[], Awaitable[object]]
    if shutdown_trigger is None:
        never = asyncio.Event()
        trigger = never.wait
    else:
        trigger = shutdown_trigger
    await serve(app, config, shutdown_trigger=trigger)


def _quiet_cancellation(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Drop the CancelledError that asyncio's stream callback reports for connections
    (held long-polls) that Hypercorn cancels at shutdown; report everything else."""
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


def run_app(app: Any, *, host: str, port: int) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then shut down gracefully (blocking)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_cancellation)
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread / Windows
                signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
        await serve_app(app, host=host, port=port, shutdown_trigger=stop.wait)

    asyncio.run(main())
