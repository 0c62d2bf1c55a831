"""Connections to Redis, and the one place that turns Redis failures into relay errors.

Every backend operation goes through :meth:`RedisConnection.run`: a bounded number of
attempts with a doubling pause, each bounded by the socket timeouts, then
:class:`sdl_core.RelayUnavailable` (a 503 with a reason). redis-py's own retries are
switched off so that the bound is the one stated in the settings, and a request can
never hang on a dead Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from darkmesh_redis.settings import PLUGIN_NAME, RedisSettings, redacted_url
from sdl_core import RelayUnavailable, StartupError

T = TypeVar("T")

log = logging.getLogger("darkmesh.redis")

#: Oldest Redis with what the scripts use (exclusive XRANGE bounds, XTRIM MINID).
MIN_REDIS_VERSION = (6, 2)

#: Failures worth another attempt: the connection, not the command, went wrong.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    OSError,
    asyncio.TimeoutError,
)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.rstrip(".")


class RedisConnection:
    """A pool for short commands plus a dedicated client for the blocking watcher."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.where = redacted_url(settings.url)
        self._client: Redis | None = None

    # ------------------------------------------------------------------ clients

    def _connection_kwargs(self, *, socket_timeout: float) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": self.settings.connect_timeout_seconds,
            "decode_responses": True,
            "retry": Retry(NoBackoff(), 0),
            "client_name": "darkmesh-relay",
        }
        password = self.settings.password.get_secret_value()
        if password:
            kwargs["password"] = password
        return kwargs

    def new_client(self, *, max_connections: int, socket_timeout: float) -> Redis:
        """A client on its own pool; a full pool waits at most one socket timeout."""
        pool = BlockingConnectionPool.from_url(
            self.settings.url,
            max_connections=max_connections,
            timeout=self.settings.socket_timeout_seconds,
            **self._connection_kwargs(socket_timeout=socket_timeout),
        )
        return Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise RelayUnavailable(f"{PLUGIN_NAME} backend is not started")
        return self._client

    # ---------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        """Connect and check the server, or raise :class:`sdl_core.StartupError` naming
        ``DARKMESH_REDIS_URL``."""
        self._client = self.new_client(
            max_connections=self.settings.max_connections,
            socket_timeout=self.settings.socket_timeout_seconds,
        )
        try:
            info = await self.run("start-up check", lambda r: r.info("server"))
        except RelayUnavailable as exc:
            await self.close()
            cause = exc.__cause__ or exc
            hint = (
                "check DARKMESH_REDIS_PASSWORD (or the password in the URL)"
                if isinstance(cause, redis_errors.AuthenticationError)
                else "start redis-server there, or point DARKMESH_REDIS_URL at a running one"
            )
            raise StartupError(
                f"{PLUGIN_NAME}: cannot reach Redis at {self.where} (DARKMESH_REDIS_URL, "
                f"[redis] url): {_describe(cause)}. Fix: {hint}"
            ) from cause
        version = str(info.get("redis_version", "0"))
        parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        if parts < MIN_REDIS_VERSION:
            await self.close()
            wanted = ".".join(str(p) for p in MIN_REDIS_VERSION)
            raise StartupError(
                f"{PLUGIN_NAME}: Redis at {self.where} is version {version}; {wanted} or "
                f"newer is required (DARKMESH_REDIS_URL)"
            )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose(close_connection_pool=True)

    # ----------------------------------------------------------------- commands

    async def run(self, what: str, operation: Callable[[Redis], Awaitable[T]]) -> T:
        """Run ``operation`` with bounded retries; raise ``RelayUnavailable`` after.

        :param what: the operation, for the 503 reason (``"publish"``).
        """
        attempts = self.settings.retry_attempts
        pause = self.settings.retry_backoff_seconds
        last: BaseException | None = None
        for attempt in range(attempts):
            try:
                return await operation(self.client)
            except redis_errors.AuthenticationError as exc:
                raise RelayUnavailable(
                    f"redis at {self.where} refused the credentials ({what})"
                ) from exc
            except TRANSIENT_ERRORS as exc:
                last = exc
                if attempt + 1 < attempts:
                    await asyncio.sleep(pause * (2**attempt))
            except redis_errors.ResponseError as exc:
                # The server answered but refused (out of memory, read-only replica):
                # retrying will not help.
                raise RelayUnavailable(f"redis refused {what}: {_describe(exc)}") from exc
        assert last is not None
        raise RelayUnavailable(
            f"redis at {self.where} unreachable ({what}, {attempts} attempts): "
            f"{_describe(last)}"
        ) from last
