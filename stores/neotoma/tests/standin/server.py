"""Run a :class:`~standin.app.NeotomaStandin` on 127.0.0.1 in a background thread (uvicorn).

The socket is bound before the app is built, so the default authority
``localhost:<port>`` is known; ``stop()``/``start()`` on the same port simulate an
outage and a recovery with real connection failures in between.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any, Self

import uvicorn

from standin.app import NeotomaStandin


def free_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


class StandinServer:
    """A stand-in served over real HTTP on loopback."""

    def __init__(self, **options: Any) -> None:
        self._sock = free_socket()
        self.port: int = self._sock.getsockname()[1]
        self.neotoma = NeotomaStandin(port=self.port, **options)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        if self._server is not None:
            return self
        sock = self._sock if self._sock is not None else free_socket(self.port)
        self._sock = None
        config = uvicorn.Config(self.neotoma.app, log_level="error", lifespan="off",
                                ws="none", access_log=False)
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True,
            name=f"neotoma-standin:{self.port}",
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the Neotoma stand-in did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
