"""A real ``redis-server`` process on 127.0.0.1 for the tests: start, stop, kill, restart.

The tests need the Debian ``redis-server`` binary; when it is missing they fail (not
skip) with the command that installs it, because CI installs it and a silently skipped
backend suite would hide a broken backend.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

INSTALL_HINT = (
    "redis-server is not installed; the darkmesh-redis tests need a real Redis. "
    "Install it: apt-get install -y redis-server (CI does this in scripts/test-all)"
)
START_TIMEOUT_SECONDS = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
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

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()
