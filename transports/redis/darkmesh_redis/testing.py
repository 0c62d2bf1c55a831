"""Test helpers: a real ``redis-server`` on 127.0.0.1, settings and relays on it.

For this distribution's tests and for cross-package tests (``tests/integration``).
Tests need the Debian ``redis-server`` binary; when it is missing they fail (not skip)
with the command that installs it, because CI installs it and a silently skipped
backend suite would hide a broken backend.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdl_core.testing.relay_process import free_port

if TYPE_CHECKING:
    from darkmesh_redis.backend import RedisRelayBackend

INSTALL_HINT = (
    "redis-server is not installed; the darkmesh-redis tests need a real Redis. "
    "Install it: apt-get install -y redis-server (CI does this in scripts/test-all)"
)
START_TIMEOUT_SECONDS = 10.0


def redis_binary() -> str:
    """Path of redis-server; fails the running test when it is not installed."""
    path = shutil.which("redis-server")
    if path is None:
        import pytest

        pytest.fail(INSTALL_HINT, pytrace=False)
    return path


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server with its own directory and port; ``appendonly`` for durability."""

    def __init__(self, directory: Path, *, port: int | None = None,
                 appendonly: bool = True) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = redis_binary()
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--save", "", "--daemonize", "no",
            "--appendonly", "yes" if self.appendonly else "no",
            # fsync every write: "acknowledged" then means on disk.
            "--appendfsync", "always",
            "--logfile", str(self.directory / "redis.log"),
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log")
                text = log.read_text() if log.exists() else ""
                raise RuntimeError(f"redis-server exited at start-up: {text[-2000:]}")
            if _ping(self.port):
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer on port {self.port} in time")

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM: Redis flushes the append-only file)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def kill(self) -> None:
        """Abrupt death (SIGKILL), as a crash or an OOM kill."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait(timeout=5)

    def command(self, *words: str) -> bytes:
        """Send one inline command (``FLUSHALL``) and return the raw reply line."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(" ".join(words).encode() + b"\r\n")
            return sock.recv(4096)

    def flushall(self) -> None:
        """Lose every key, as a wiped or replaced Redis would."""
        reply = self.command("FLUSHALL")
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"FLUSHALL failed: {reply!r}")

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()


#: Shared relay key of :func:`make_relay_host` relays (hmac mode).
RELAY_KEY = "redis-tests-relay-key"


def make_settings(url: str, prefix: str | None = None, **overrides: Any) -> Any:
    """:class:`~darkmesh_redis.settings.RedisSettings` for tests: a fresh key prefix and
    short timeouts, so failures surface in about two seconds."""
    from darkmesh_redis.settings import RedisSettings

    values: dict[str, Any] = {
        "url": url,
        "key_prefix": prefix or f"test-{uuid.uuid4().hex[:12]}:",
        "retry_attempts": 2,
        "retry_backoff_seconds": 0.05,
        "socket_timeout_seconds": 1.0,
        "connect_timeout_seconds": 1.0,
    }
    values.update(overrides)
    return RedisSettings(**values)


@asynccontextmanager
async def started_backend(settings: Any) -> AsyncIterator[RedisRelayBackend]:
    """A started :class:`~darkmesh_redis.backend.RedisRelayBackend` on ``settings``,
    closed after the block however it ends."""
    from darkmesh_redis.backend import RedisRelayBackend

    backend = RedisRelayBackend(settings)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


def settings_env(settings: Any) -> dict[str, str]:
    """``DARKMESH_REDIS_*`` variables that reproduce ``settings`` in a relay process."""
    env = {}
    for name, value in settings.model_dump().items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"DARKMESH_REDIS_{name.upper()}"] = str(value)
    return env


def make_relay_host(settings: Any) -> Any:
    """An unstarted in-process relay on the redis backend (hmac mode, key RELAY_KEY)."""
    from pydantic import SecretStr

    from sdl_core import RelayHost, RelaySettings, make_plugin_manager

    relay_settings = RelaySettings(backend="redis", auth_mode="hmac", key=SecretStr(RELAY_KEY))
    table = settings.model_dump(mode="json")
    table["password"] = settings.password.get_secret_value()
    return RelayHost(make_plugin_manager(only={"darkmesh-redis"}), relay_settings,
                     {"redis": table})
