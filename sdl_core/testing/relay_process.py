"""``RelayProcess``: a real relay (Hypercorn) in a subprocess on 127.0.0.1.

For end-to-end tests and benchmarks of relay backends. It does not need the CLI: the
launcher builds a :class:`~sdl_core.RelayHost` with only the plugins it names and serves
:func:`~sdl_core.relay.app.create_relay_app` through :func:`~sdl_core.serving.run_app`::

    with RelayProcess(backend="sqlite", data_dir=tmp_path) as relay:
        httpx.get(f"{relay.url}/darkmesh/relay/health")

A backend from another distribution passes its entry-point name in ``plugins`` and its
settings through ``env`` (``DARKMESH_REDIS_URL=...``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

__all__ = ["RelayProcess", "free_port"]

LAUNCHER = """
import sys
from sdl_core.host import RelayHost
from sdl_core.plugins import make_plugin_manager
from sdl_core.relay.app import create_relay_app
from sdl_core.serving import run_app

port, backend, data_dir, key, auth_mode, plugins = sys.argv[1:7]
pm = make_plugin_manager(only=set(filter(None, plugins.split(","))))
relay = RelayHost.create(pm=pm, overrides={
    "port": int(port), "backend": backend, "data_dir": data_dir, "key": key,
    "auth_mode": auth_mode,
})
run_app(create_relay_app(relay), host="127.0.0.1", port=int(port))
"""

BUILTIN_BACKENDS = ("darkmesh-sdl.memory", "darkmesh-sdl.sqlite")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RelayProcess:
    """Start a relay subprocess, wait until it answers health, stop it on exit."""

    def __init__(
        self,
        *,
        backend: str = "sqlite",
        data_dir: Path,
        key: str = "relay-process-key",
        auth_mode: str = "hmac",
        plugins: Iterable[str] = BUILTIN_BACKENDS,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.backend = backend
        self.data_dir = Path(data_dir)
        self.key = key
        self.auth_mode = auth_mode
        self.plugins = tuple(plugins)
        self.extra_env = dict(env or {})
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The relay must read neither the caller's settings file nor its DARKMESH_* vars.
        env = {k: v for k, v in os.environ.items() if not k.startswith("DARKMESH_")}
        env.update(self.extra_env)
        self.process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, str(self.port), self.backend, str(self.data_dir),
             self.key, self.auth_mode, ",".join(self.plugins)],
            cwd=self.data_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr
                err = stderr.read().decode(errors="replace") if stderr else ""
                raise RuntimeError(f"relay process exited with {self.process.returncode}: {err}")
            try:
                if httpx.get(f"{self.url}/darkmesh/relay/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"relay process did not answer on {self.url} within "
                           f"{self.startup_timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then wait; kill if it does not exit. Returns the exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()
        return process.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
